//! Local reductions: fold one buffer of contributions into another.
//!
//! These define the result of every op for every dtype; the kernel path's programs must compute the
//! same values. Both are checked against a table of expected results written by hand
//! (`boad_test_support::oracle`: wrapping at every width, signed and unsigned order, logical ops,
//! NaN, signed zeros, infinities, subnormals), and against each other on random data.
//!
//! [`fold()`] runs on the calling thread. [`par`] folds large buffers in fixed pieces on a small
//! thread pool where the host has cores to spare, with the same result bit for bit.

pub mod par;

use boad_common::fold;
use num_traits::Float;

use crate::types::{DType, Op};

/// An integer element type.
trait Integer: bytemuck::Pod + fold::Int {}
impl<T: bytemuck::Pod + fold::Int> Integer for T {}

/// A float element type, and the unsigned integer of its bits.
trait IeeeFloat: bytemuck::Pod + Float {
    type Bits: fold::FloatBits + bytemuck::Pod;
}
impl IeeeFloat for f32 {
    type Bits = u32;
}
impl IeeeFloat for f64 {
    type Bits = u64;
}

/// `op` on two integers: `boad_common::fold::int`, the kernel's own arithmetic.
#[inline(always)]
fn int<T: Integer>(op: Op, a: T, b: T) -> T {
    fold::int(op as u8, a, b)
}

/// `op` on two floats: natively for sum and product, on bit patterns for min and max
/// (`boad_common::fold::float_bits`, the kernel's own arithmetic).
#[inline(always)]
fn float<T: IeeeFloat>(op: Op, a: T, b: T) -> T {
    match op {
        Op::Sum => a + b,
        Op::Prod => a * b,
        Op::Min | Op::Max => bytemuck::cast(fold::float_bits::<T::Bits>(
            op as u8,
            bytemuck::cast(a),
            bytemuck::cast(b),
        )),
        // Rejected by `fold` before we get here: bitwise and logical ops.
        Op::Band | Op::Bor | Op::Bxor | Op::Land | Op::Lor => a,
    }
}

#[inline(always)]
fn fold_op<T: bytemuck::Pod, F: Fn(Op, T, T) -> T>(op: Op, acc: &mut [u8], other: &[u8], apply: F) {
    match (
        bytemuck::try_cast_slice_mut::<u8, T>(acc),
        bytemuck::try_cast_slice::<u8, T>(other),
    ) {
        (Ok(a), Ok(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                *x = apply(op, *x, *y);
            }
        }
        (a, _) => {
            // Unaligned buffers (e.g. a datagram payload): element by element through copies.
            let acc = match a {
                Ok(t) => bytemuck::cast_slice_mut::<T, u8>(t),
                Err(_) => acc,
            };
            let n = std::mem::size_of::<T>();
            for (x, y) in acc.chunks_exact_mut(n).zip(other.chunks_exact(n)) {
                let r = apply(
                    op,
                    bytemuck::pod_read_unaligned(x),
                    bytemuck::pod_read_unaligned(y),
                );
                x.copy_from_slice(bytemuck::bytes_of(&r));
            }
        }
    }
}

/// Monomorphises `fold_op` per element type (`apply`, a function item, is inlined) and per op (a
/// constant in each arm), so the inner loop has no call and no branch on the op.
fn fold_typed<T: bytemuck::Pod, F: Fn(Op, T, T) -> T + Copy>(
    op: Op,
    acc: &mut [u8],
    other: &[u8],
    apply: F,
) {
    match op {
        Op::Sum => fold_op(Op::Sum, acc, other, apply),
        Op::Prod => fold_op(Op::Prod, acc, other, apply),
        Op::Min => fold_op(Op::Min, acc, other, apply),
        Op::Max => fold_op(Op::Max, acc, other, apply),
        Op::Band => fold_op(Op::Band, acc, other, apply),
        Op::Bor => fold_op(Op::Bor, acc, other, apply),
        Op::Bxor => fold_op(Op::Bxor, acc, other, apply),
        Op::Land => fold_op(Op::Land, acc, other, apply),
        Op::Lor => fold_op(Op::Lor, acc, other, apply),
    }
}

/// `acc[i] = op(acc[i], other[i])` for every element; `acc` and `other` hold little-endian elements of
/// `dtype` and have the same length. Returns false (and changes nothing) if `op` is not defined on
/// `dtype` or the lengths do not match.
pub fn fold(dtype: DType, op: Op, acc: &mut [u8], other: &[u8]) -> bool {
    if !op.supports(dtype) || acc.len() != other.len() || !acc.len().is_multiple_of(dtype.size()) {
        return false;
    }
    match dtype {
        DType::I8 => fold_typed(op, acc, other, int::<i8>),
        DType::I16 => fold_typed(op, acc, other, int::<i16>),
        DType::I32 => fold_typed(op, acc, other, int::<i32>),
        DType::I64 => fold_typed(op, acc, other, int::<i64>),
        DType::U8 => fold_typed(op, acc, other, int::<u8>),
        DType::U16 => fold_typed(op, acc, other, int::<u16>),
        DType::U32 => fold_typed(op, acc, other, int::<u32>),
        DType::U64 => fold_typed(op, acc, other, int::<u64>),
        DType::F32 => fold_typed(op, acc, other, float::<f32>),
        DType::F64 => fold_typed(op, acc, other, float::<f64>),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use boad_test_support::oracle;

    fn f<T: bytemuck::Pod>(dtype: DType, op: Op, a: &[T], b: &[T]) -> Vec<T> {
        let mut acc = a.to_vec();
        assert!(fold(
            dtype,
            op,
            bytemuck::cast_slice_mut(&mut acc),
            bytemuck::cast_slice(b)
        ));
        acc
    }

    /// `boad::Op` and `boad::DType` of the oracle's names.
    fn boad_op(op: oracle::Op) -> Op {
        Op::ALL
            .into_iter()
            .find(|o| o.name() == op.name())
            .unwrap_or_else(|| panic!("no boad op named {}", op.name()))
    }

    fn boad_dtype<T: oracle::Elem>() -> DType {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == T::DTYPE && d.size() == T::SIZE)
            .unwrap_or_else(|| panic!("no boad dtype named {}", T::DTYPE))
    }

    /// Every case of the hand-written table, one fold each, then each op's cases as one buffer
    /// (the aligned loop) and at odd offsets (the unaligned loop). Counts what it checked.
    #[test]
    fn matches_the_independent_oracle() {
        use boad_test_support::oracle::{self as o, Elem, Visit};
        struct Check {
            wrong: Vec<String>,
            singles: usize,
            buffers: usize,
        }
        impl Visit for Check {
            fn visit<T: Elem>(&mut self) {
                let dtype = boad_dtype::<T>();
                for case in T::cases() {
                    let (mut acc, mut b) = (vec![], vec![]);
                    case.a.put_le(&mut acc);
                    case.b.put_le(&mut b);
                    assert!(
                        fold(dtype, boad_op(case.op), &mut acc, &b),
                        "{}",
                        case.show()
                    );
                    let got = T::get_le(&acc);
                    if !T::matches(case.op, got, case.want) {
                        self.wrong
                            .push(format!("{}: got {}", case.show(), got.show()));
                    }
                    self.singles += 1;
                }
                for op in o::Op::ALL {
                    let cases: Vec<_> = o::cases_of::<T>(op).collect();
                    if cases.is_empty() {
                        // Not defined on this type: fold refuses it.
                        let mut acc = vec![0u8; T::SIZE];
                        assert!(!fold(dtype, boad_op(op), &mut acc, &vec![0u8; T::SIZE]));
                        continue;
                    }
                    let (mut a, mut b) = (vec![0u8; 1], vec![0u8; 3]);
                    for c in &cases {
                        c.a.put_le(&mut a);
                        c.b.put_le(&mut b);
                    }
                    // Aligned copies, and the same bytes at offsets 1 and 3.
                    let mut aligned: Vec<u64> = vec![0; (a.len() - 1).div_ceil(8)];
                    let whole = bytemuck::cast_slice_mut::<u64, u8>(&mut aligned);
                    let acc = &mut whole[..a.len() - 1];
                    acc.copy_from_slice(&a[1..]);
                    let other: Vec<u64> = {
                        let mut v = vec![0u64; (b.len() - 3).div_ceil(8)];
                        bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..b.len() - 3]
                            .copy_from_slice(&b[3..]);
                        v
                    };
                    let other = &bytemuck::cast_slice::<u64, u8>(&other)[..b.len() - 3];
                    assert!(fold(dtype, boad_op(op), acc, other));
                    assert!(fold(dtype, boad_op(op), &mut a[1..], &b[3..]));
                    for (name, got) in [("aligned", &*acc), ("unaligned", &a[1..])] {
                        for (i, c) in cases.iter().enumerate() {
                            let g = T::get_le(&got[i * T::SIZE..]);
                            if !T::matches(op, g, c.want) {
                                self.wrong
                                    .push(format!("{dtype} {name} buffer {c:?}: got {g:?}"));
                            }
                        }
                    }
                    self.buffers += 1;
                }
            }
        }
        let mut c = Check {
            wrong: vec![],
            singles: 0,
            buffers: 0,
        };
        o::visit_all(&mut c);
        assert!(
            c.wrong.is_empty(),
            "{} wrong:\n{}",
            c.wrong.len(),
            c.wrong.join("\n")
        );
        assert_eq!(c.singles, o::total_cases());
        // 9 ops on each of 8 integer types, 4 on each of 2 float types.
        assert_eq!(c.buffers, 9 * 8 + 4 * 2);
    }

    #[test]
    fn integer_ops() {
        let a = [3i32, -4, 0, i32::MAX];
        let b = [5i32, 2, 7, 1];
        assert_eq!(f(DType::I32, Op::Sum, &a, &b), [8, -2, 7, i32::MIN]);
        assert_eq!(f(DType::I32, Op::Prod, &a, &b), [15, -8, 0, i32::MAX]);
        assert_eq!(f(DType::I32, Op::Min, &a, &b), [3, -4, 0, 1]);
        assert_eq!(f(DType::I32, Op::Max, &a, &b), [5, 2, 7, i32::MAX]);
        assert_eq!(f(DType::I32, Op::Band, &a, &b), [1, 0, 0, 1]);
        assert_eq!(f(DType::I32, Op::Bor, &a, &b), [7, -2, 7, i32::MAX]);
        assert_eq!(f(DType::I32, Op::Bxor, &a, &b), [6, -2, 7, i32::MAX - 1]);
        assert_eq!(f(DType::I32, Op::Land, &a, &b), [1, 1, 0, 1]);
        assert_eq!(f(DType::I32, Op::Lor, &[0i32, 0, 2], &[0, 3, 0]), [0, 1, 1]);
    }

    #[test]
    fn float_min_max_nan_and_signed_zero() {
        let a = [1.0f32, f32::NAN, -0.0, 2.0];
        let b = [f32::NAN, 1.0, 0.0, -3.0];
        let m = f(DType::F32, Op::Min, &a, &b);
        assert!(m[0].is_nan() && m[1].is_nan());
        assert!(m[2] == 0.0 && m[2].is_sign_negative());
        assert_eq!(m[3], -3.0);
        let m = f(DType::F32, Op::Max, &a, &b);
        assert!(m[2] == 0.0 && m[2].is_sign_positive());
        assert_eq!(m[3], 2.0);
    }

    #[test]
    fn rejects_bitwise_on_floats_and_bad_lengths() {
        let mut acc = [0u8; 8];
        assert!(!fold(DType::F64, Op::Band, &mut acc, &[0u8; 8]));
        assert!(!fold(DType::I32, Op::Sum, &mut acc, &[0u8; 4]));
        assert!(!fold(DType::I32, Op::Sum, &mut acc[..6], &[0u8; 6]));
    }

    #[test]
    fn unaligned_matches_aligned() {
        let a: Vec<u64> = (0..33).map(|i| i * 0x1234_5678_9abc).collect();
        let b: Vec<u64> = (0..33).map(|i| i * 77 + 5).collect();
        let want = f(DType::U64, Op::Sum, &a, &b);
        let mut acc = vec![0u8; 8 * 33 + 1];
        acc[1..].copy_from_slice(bytemuck::cast_slice(&a));
        let mut other = vec![0u8; 8 * 33 + 3];
        other[3..].copy_from_slice(bytemuck::cast_slice(&b));
        assert!(fold(DType::U64, Op::Sum, &mut acc[1..], &other[3..]));
        let got: Vec<u64> = acc[1..]
            .chunks_exact(8)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        assert_eq!(got, want);
    }
}
