//! The arithmetic of every reduction op, one definition for the runtime's local folds
//! (`boad::ops`) and the kernel's XDP folds (`collectives-ebpf/src/fold.rs`, every program), so
//! the two give the same bits.
//!
//! - Integers ([`int`]): `sum` and `prod` wrap; `min`, `max`, bitwise ops as usual; `land`/`lor`
//!   give 1 or 0.
//! - Floats, `min` and `max` ([`float_bits`]), on IEEE bit patterns (eBPF has no floating point):
//!   a NaN operand wins (the first if both are), otherwise IEEE 754 total order, so `-0.0 < +0.0`.
//!   Float `sum` and `prod` need floating point: the runtime computes them natively, the kernel not
//!   at all ([`crate::kernel::folds`]).
//!
//! Every function is `#[inline(always)]` and, for a constant `op`, reduces to the one operation:
//! the eBPF verifier sees straight-line code. The element types are named by [`Int`] and
//! [`FloatBits`], so users need not spell out the `num-traits` bounds.

use num_traits::{PrimInt, Unsigned, WrappingAdd, WrappingMul};

use crate::op;

/// An integer element type [`int`] folds: `i8`..`i64`, `u8`..`u64`.
pub trait Int: PrimInt + WrappingAdd + WrappingMul {}
impl<T: PrimInt + WrappingAdd + WrappingMul> Int for T {}

/// The bits of an IEEE float [`float_bits`] folds: `u32` for `f32`, `u64` for `f64`.
pub trait FloatBits: PrimInt + Unsigned {
    /// Width of the exponent field.
    const EXP_BITS: usize;
}
impl FloatBits for u32 {
    const EXP_BITS: usize = 8;
}
impl FloatBits for u64 {
    const EXP_BITS: usize = 11;
}

/// `op` (an [`op`](crate::op) code) applied to two integers; `a` unchanged for a code that is no
/// integer op.
#[inline(always)]
pub fn int<T: Int>(op: u8, a: T, b: T) -> T {
    let bool_int = |x: bool| if x { T::one() } else { T::zero() };
    match op {
        op::SUM => a.wrapping_add(&b),
        op::PROD => a.wrapping_mul(&b),
        op::MIN => {
            if b < a {
                b
            } else {
                a
            }
        }
        op::MAX => {
            if b > a {
                b
            } else {
                a
            }
        }
        op::BAND => a & b,
        op::BOR => a | b,
        op::BXOR => a ^ b,
        op::LAND => bool_int(a != T::zero() && b != T::zero()),
        op::LOR => bool_int(a != T::zero() || b != T::zero()),
        _ => a,
    }
}

/// `min` or `max` (`op`) of two IEEE floats given as their bit patterns (`u32` for `f32`, `u64`
/// for `f64`); `a` for any other op.
#[inline(always)]
pub fn float_bits<B: FloatBits>(op: u8, a: B, b: B) -> B {
    let bits = B::zero().count_zeros() as usize;
    let sign = B::one() << (bits - 1);
    // Exponent all ones, mantissa zero: infinity. Larger magnitudes are NaNs.
    let inf = ((B::one() << B::EXP_BITS) - B::one()) << (bits - 1 - B::EXP_BITS);
    let nan = |x: B| x & !sign > inf;
    if nan(a) {
        return a;
    }
    if nan(b) {
        return b;
    }
    // Total-order key: compares as unsigned exactly as the floats do in IEEE total order.
    let key = |x: B| if x & sign != B::zero() { !x } else { x | sign };
    match op {
        op::MIN => {
            if key(b) < key(a) {
                b
            } else {
                a
            }
        }
        op::MAX => {
            if key(b) > key(a) {
                b
            } else {
                a
            }
        }
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ops_wrap_and_logical_ops_give_one_or_zero() {
        assert_eq!(int(op::SUM, i8::MAX, 1), i8::MIN);
        assert_eq!(int(op::PROD, 200u8, 2), 144);
        assert_eq!(int(op::MIN, -3i32, 2), -3);
        assert_eq!(int(op::MAX, u64::MAX, 0), u64::MAX);
        assert_eq!(int(op::BAND, 0b1100u16, 0b1010), 0b1000);
        assert_eq!(int(op::BOR, 0b1100u16, 0b1010), 0b1110);
        assert_eq!(int(op::BXOR, 0b1100u16, 0b1010), 0b0110);
        assert_eq!(int(op::LAND, -5i64, 7), 1);
        assert_eq!(int(op::LAND, 0i64, 7), 0);
        assert_eq!(int(op::LOR, 0i16, -1), 1);
        assert_eq!(int(op::LOR, 0i16, 0), 0);
    }

    #[test]
    fn float_min_max_on_bits_follow_total_order_and_nan_wins() {
        let f = |op, a: f32, b: f32| f32::from_bits(float_bits(op, a.to_bits(), b.to_bits()));
        assert_eq!(f(op::MIN, 1.0, -2.0), -2.0);
        assert_eq!(f(op::MAX, 1.0, -2.0), 1.0);
        assert!(f(op::MIN, -0.0, 0.0).is_sign_negative());
        assert!(f(op::MAX, -0.0, 0.0).is_sign_positive());
        assert_eq!(f(op::MAX, f32::NEG_INFINITY, f32::MIN), f32::MIN);
        assert!(f(op::MIN, f32::NAN, 1.0).is_nan() && f(op::MAX, 1.0, f32::NAN).is_nan());
        let g = |op, a: f64, b: f64| f64::from_bits(float_bits(op, a.to_bits(), b.to_bits()));
        assert_eq!(g(op::MIN, f64::INFINITY, 5.0), 5.0);
        assert_eq!(g(op::MAX, -1e-310, -2e-310), -1e-310);
        let first = f64::from_bits(0x7ff8_0000_0000_0001);
        let second = f64::from_bits(0x7ff8_0000_0000_0002);
        assert_eq!(g(op::MIN, first, second).to_bits(), first.to_bits());
    }
}
