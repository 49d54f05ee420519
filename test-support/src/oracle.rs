//! The expected result of every reduction op on every element type, written out by hand: an
//! oracle that shares no code with what it checks.
//!
//! Each [`Case`] says that folding `b` into an accumulator holding `a` gives `want`. The values
//! are constants computed by hand (and checked once with arbitrary-precision integers), never
//! with boad's own arithmetic: `boad::ops::fold` is checked against them (its unit tests), the
//! kernel path's eBPF fold programs too (`tests-privileged`), and so is the reference of the
//! multi-process worker (`tests-integration`). A bug shared by those would show here.
//!
//! The rules the tables spell out:
//! - integer `sum` and `prod` wrap at the width of the type (two's complement for signed types);
//! - `min` and `max` compare as signed or unsigned numbers, as the type is;
//! - `land` and `lor` treat any non-zero value (negative, or with only high bits set) as true and
//!   give exactly 0 or 1;
//! - float `min` and `max`: if either input is NaN the result is NaN, the first NaN folded (the
//!   accumulator's, `a`) if both are, bit for bit; otherwise the IEEE total order, so `-0.0` orders
//!   below `+0.0`; subnormals and infinities are ordinary values;
//! - float `sum` and `prod` are IEEE arithmetic (round to nearest, ties to even); where they give
//!   NaN, any NaN is right (the hardware picks its payload);
//! - `band`, `bor`, `bxor`, `land` and `lor` are not defined on floats: the float tables have no
//!   case of them.

use std::fmt::Debug;

/// A reduction op, named as `boad::Op::name` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Sum.
    Sum,
    /// Product.
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Bitwise and.
    Band,
    /// Bitwise or.
    Bor,
    /// Bitwise exclusive or.
    Bxor,
    /// Logical and.
    Land,
    /// Logical or.
    Lor,
}

impl Op {
    /// Every op.
    pub const ALL: [Op; 9] = [
        Op::Sum,
        Op::Prod,
        Op::Min,
        Op::Max,
        Op::Band,
        Op::Bor,
        Op::Bxor,
        Op::Land,
        Op::Lor,
    ];

    /// `sum`, `prod`, `min`, `max`, `band`, `bor`, `bxor`, `land` or `lor`.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Sum => "sum",
            Op::Prod => "prod",
            Op::Min => "min",
            Op::Max => "max",
            Op::Band => "band",
            Op::Bor => "bor",
            Op::Bxor => "bxor",
            Op::Land => "land",
            Op::Lor => "lor",
        }
    }
}

/// Folding `b` into an accumulator holding `a` with `op` gives `want`.
#[derive(Clone, Copy, Debug)]
pub struct Case<T> {
    /// The op.
    pub op: Op,
    /// The accumulator (the first contribution folded).
    pub a: T,
    /// The contribution folded into it.
    pub b: T,
    /// The result.
    pub want: T,
}

/// An element type with its table.
pub trait Elem: Copy + PartialEq + Debug + 'static {
    /// The dtype's name, as `boad::DType::name` names it (`i8` ... `f64`).
    const DTYPE: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// Whether it is a float type (only `sum`, `prod`, `min` and `max` are defined on it).
    const FLOAT: bool;
    /// The table.
    fn cases() -> &'static [Case<Self>];
    /// Appends the little-endian bytes of `self` to `out`.
    fn put_le(self, out: &mut Vec<u8>);
    /// The element in the first `SIZE` little-endian bytes of `b`.
    fn get_le(b: &[u8]) -> Self;
    /// Whether `got` is `want` for `op`: the same bits, except that any NaN is right where the
    /// table expects a NaN from float `sum` or `prod`.
    fn matches(op: Op, got: Self, want: Self) -> bool;
    /// The value for a message: a float with its bits too (NaNs and zeros differ only there).
    fn show(self) -> String;
}

impl<T: Elem> Case<T> {
    /// `i8 sum(127, 1) = -128`, floats with their bits.
    pub fn show(&self) -> String {
        format!(
            "{} {}({}, {}) = {}",
            T::DTYPE,
            self.op.name(),
            self.a.show(),
            self.b.show(),
            self.want.show()
        )
    }
}

/// Something done once per element type, with the type (see [`visit_all`]).
pub trait Visit {
    /// Called once for each element type.
    fn visit<T: Elem>(&mut self);
}

/// Calls `v.visit::<T>()` for each of the ten element types, in boad's dtype order.
pub fn visit_all(v: &mut impl Visit) {
    v.visit::<i8>();
    v.visit::<i16>();
    v.visit::<i32>();
    v.visit::<i64>();
    v.visit::<u8>();
    v.visit::<u16>();
    v.visit::<u32>();
    v.visit::<u64>();
    v.visit::<f32>();
    v.visit::<f64>();
}

/// The cases of `op` in `T`'s table.
pub fn cases_of<T: Elem>(op: Op) -> impl Iterator<Item = &'static Case<T>> {
    T::cases().iter().filter(move |c| c.op == op)
}

/// The number of cases in every table together.
pub fn total_cases() -> usize {
    struct Count(usize);
    impl Visit for Count {
        fn visit<T: Elem>(&mut self) {
            self.0 += T::cases().len();
        }
    }
    let mut c = Count(0);
    visit_all(&mut c);
    c.0
}

macro_rules! int_elem {
    ($($t:ty => $table:ident),*) => {$(
        impl Elem for $t {
            const DTYPE: &'static str = stringify!($t);
            const SIZE: usize = std::mem::size_of::<$t>();
            const FLOAT: bool = false;
            fn cases() -> &'static [Case<Self>] {
                $table
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(a)
            }
            fn matches(_: Op, got: Self, want: Self) -> bool {
                got == want
            }
            fn show(self) -> String {
                self.to_string()
            }
        }
    )*};
}
int_elem!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64);

macro_rules! float_elem {
    ($($t:ty => $table:ident),*) => {$(
        impl Elem for $t {
            const DTYPE: &'static str = stringify!($t);
            const SIZE: usize = std::mem::size_of::<$t>();
            const FLOAT: bool = true;
            fn cases() -> &'static [Case<Self>] {
                $table
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(a)
            }
            fn matches(op: Op, got: Self, want: Self) -> bool {
                if matches!(op, Op::Sum | Op::Prod) && want.is_nan() {
                    return got.is_nan();
                }
                got.to_bits() == want.to_bits()
            }
            fn show(self) -> String {
                format!("{self:?} ({:#x})", self.to_bits())
            }
        }
    )*};
}
float_elem!(f32 => F32, f64 => F64);

/// `op a, b => want;` lines into a table.
macro_rules! table {
    ($($op:ident $a:expr, $b:expr => $want:expr;)*) => {
        &[$(Case { op: Op::$op, a: $a, b: $b, want: $want }),*]
    };
}

// Integer tables. Literals only (the `MIN`/`MAX` of the type where that is clearer); every wrapped
// result was worked out as (exact result) mod 2^bits, read as signed for the signed types.

const I8: &[Case<i8>] = table! {
    Sum 127, 1 => -128;
    Sum -128, -1 => 127;
    Sum -128, -128 => 0;
    Sum 127, 127 => -2;
    Sum 127, -128 => -1;
    Sum 100, 27 => 127;
    Sum 100, 28 => -128;
    Sum -5, 3 => -2;
    Prod 16, 8 => -128;
    Prod -128, -1 => -128;
    Prod 127, 127 => 1;
    Prod 127, 2 => -2;
    Prod -128, 2 => 0;
    Prod -128, -128 => 0;
    Prod -3, 5 => -15;
    Prod -1, -1 => 1;
    Prod 0, -128 => 0;
    Min -1, 1 => -1;
    Min 1, -1 => -1;
    Min -128, 127 => -128;
    Min 127, -128 => -128;
    Min -5, -5 => -5;
    Min 0, -1 => -1;
    Max -1, 1 => 1;
    Max 1, -1 => 1;
    Max -128, 127 => 127;
    Max 127, -128 => 127;
    Max 0, -1 => 0;
    Max -128, -1 => -1;
    Band -1, 85 => 85;
    Band -128, 127 => 0;
    Band 15, 60 => 12;
    Band -1, -128 => -128;
    Bor -128, 127 => -1;
    Bor 15, 60 => 63;
    Bor 0, -128 => -128;
    Bxor -1, 85 => -86;
    Bxor 15, 60 => 51;
    Bxor -128, -1 => 127;
    Bxor 127, 127 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land -1, 2 => 1;
    Land -128, -128 => 1;
    Land -128, 0 => 0;
    Land -128, -1 => 1;
    Land 100, 100 => 1;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor 7, 0 => 1;
    Lor -1, 0 => 1;
    Lor 0, -128 => 1;
    Lor -128, -128 => 1;
};

const I16: &[Case<i16>] = table! {
    Sum 32767, 1 => -32768;
    Sum -32768, -1 => 32767;
    Sum -32768, -32768 => 0;
    Sum 32767, 32767 => -2;
    Sum 32767, -32768 => -1;
    Sum 30000, 30000 => -5536;
    Sum -5, 3 => -2;
    Prod 256, 128 => -32768;
    Prod -32768, -1 => -32768;
    Prod 32767, 32767 => 1;
    Prod 32767, 2 => -2;
    Prod -32768, 2 => 0;
    Prod 300, 300 => 24464;
    Prod -7, 9 => -63;
    Prod 0, -32768 => 0;
    Min -1, 1 => -1;
    Min 1, -1 => -1;
    Min -32768, 32767 => -32768;
    Min 32767, -32768 => -32768;
    Min 0, -1 => -1;
    Min 255, 256 => 255;
    Max -1, 1 => 1;
    Max -32768, 32767 => 32767;
    Max 32767, -32768 => 32767;
    Max 0, -1 => 0;
    Max -32768, -1 => -1;
    Max 255, 256 => 256;
    Band -1, 85 => 85;
    Band -32768, 32767 => 0;
    Band 15, 60 => 12;
    Band 4080, 255 => 240;
    Bor -32768, 32767 => -1;
    Bor 15, 60 => 63;
    Bor 256, 1 => 257;
    Bxor -1, 85 => -86;
    Bxor -32768, -1 => 32767;
    Bxor 256, 257 => 1;
    Bxor 32767, 32767 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land -1, 2 => 1;
    Land -32768, -32768 => 1;
    Land 256, 1 => 1;
    Land 256, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor -1, 0 => 1;
    Lor 0, 256 => 1;
    Lor -32768, 0 => 1;
};

const I32: &[Case<i32>] = table! {
    Sum 2147483647, 1 => -2147483648;
    Sum -2147483648, -1 => 2147483647;
    Sum -2147483648, -2147483648 => 0;
    Sum 2147483647, 2147483647 => -2;
    Sum 2147483647, -2147483648 => -1;
    Sum 2000000000, 2000000000 => -294967296;
    Sum -5, 3 => -2;
    Prod 65536, 32768 => -2147483648;
    Prod -2147483648, -1 => -2147483648;
    Prod 2147483647, 2147483647 => 1;
    Prod 2147483647, 2 => -2;
    Prod -2147483648, 2 => 0;
    Prod 100000, 100000 => 1410065408;
    Prod -46341, 46341 => 2147479015;
    Prod -7, 9 => -63;
    Min -1, 1 => -1;
    Min 1, -1 => -1;
    Min -2147483648, 2147483647 => -2147483648;
    Min 2147483647, -2147483648 => -2147483648;
    Min 0, -1 => -1;
    Min 65535, 65536 => 65535;
    Max -1, 1 => 1;
    Max -2147483648, 2147483647 => 2147483647;
    Max 2147483647, -2147483648 => 2147483647;
    Max 0, -1 => 0;
    Max 65535, 65536 => 65536;
    Band -1, 85 => 85;
    Band -2147483648, 2147483647 => 0;
    Band 15, 60 => 12;
    Band 16777215, -16777216 => 0;
    Bor -2147483648, 2147483647 => -1;
    Bor 15, 60 => 63;
    Bor 16777215, -16777216 => -1;
    Bxor -1, 85 => -86;
    Bxor -2147483648, -1 => 2147483647;
    Bxor 65536, 65537 => 1;
    Bxor 7, 7 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land -1, 2 => 1;
    Land -2147483648, -2147483648 => 1;
    Land 65536, 16777216 => 1;
    Land 65536, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor -1, 0 => 1;
    Lor 0, 65536 => 1;
    Lor -2147483648, 0 => 1;
};

const I64: &[Case<i64>] = table! {
    Sum i64::MAX, 1 => i64::MIN;
    Sum i64::MIN, -1 => i64::MAX;
    Sum i64::MIN, i64::MIN => 0;
    Sum i64::MAX, i64::MAX => -2;
    Sum i64::MAX, i64::MIN => -1;
    Sum 5000000000000000000, 5000000000000000000 => -8446744073709551616;
    Sum 4294967295, 1 => 4294967296;
    Sum -5, 3 => -2;
    Prod 4294967296, 2147483648 => i64::MIN;
    Prod i64::MIN, -1 => i64::MIN;
    Prod i64::MAX, i64::MAX => 1;
    Prod i64::MAX, 2 => -2;
    Prod i64::MIN, 2 => 0;
    Prod 10000000000, 10000000000 => 7766279631452241920;
    Prod 4294967296, 4294967296 => 0;
    Prod -7, 9 => -63;
    Min -1, 1 => -1;
    Min 1, -1 => -1;
    Min i64::MIN, i64::MAX => i64::MIN;
    Min i64::MAX, i64::MIN => i64::MIN;
    Min 0, -1 => -1;
    Min 4294967295, 4294967296 => 4294967295;
    Max -1, 1 => 1;
    Max i64::MIN, i64::MAX => i64::MAX;
    Max i64::MAX, i64::MIN => i64::MAX;
    Max 0, -1 => 0;
    Max 4294967295, 4294967296 => 4294967296;
    Band -1, 85 => 85;
    Band i64::MIN, i64::MAX => 0;
    Band 15, 60 => 12;
    Band 4294967295, -4294967296 => 0;
    Bor i64::MIN, i64::MAX => -1;
    Bor 15, 60 => 63;
    Bor 4294967295, -4294967296 => -1;
    Bxor -1, 85 => -86;
    Bxor i64::MIN, -1 => i64::MAX;
    Bxor 4294967296, 4294967297 => 1;
    Bxor 7, 7 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land -1, 2 => 1;
    Land i64::MIN, i64::MIN => 1;
    Land 4294967296, 1 => 1;
    Land 4294967296, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor -1, 0 => 1;
    Lor 0, 4294967296 => 1;
    Lor i64::MIN, 0 => 1;
};

const U8: &[Case<u8>] = table! {
    Sum 255, 1 => 0;
    Sum 255, 255 => 254;
    Sum 200, 100 => 44;
    Sum 255, 0 => 255;
    Sum 0, 0 => 0;
    Prod 255, 255 => 1;
    Prod 255, 2 => 254;
    Prod 16, 16 => 0;
    Prod 200, 2 => 144;
    Prod 15, 17 => 255;
    Prod 0, 255 => 0;
    Min 0, 255 => 0;
    Min 255, 0 => 0;
    Min 128, 127 => 127;
    Min 127, 128 => 127;
    Min 1, 255 => 1;
    Max 0, 255 => 255;
    Max 255, 0 => 255;
    Max 128, 127 => 128;
    Max 127, 128 => 128;
    Max 255, 1 => 255;
    Band 255, 85 => 85;
    Band 240, 60 => 48;
    Band 128, 127 => 0;
    Bor 128, 127 => 255;
    Bor 15, 60 => 63;
    Bor 0, 255 => 255;
    Bxor 255, 85 => 0xaa;
    Bxor 15, 60 => 51;
    Bxor 255, 255 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land 128, 3 => 1;
    Land 255, 255 => 1;
    Land 128, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor 128, 0 => 1;
    Lor 255, 255 => 1;
};

const U16: &[Case<u16>] = table! {
    Sum 65535, 1 => 0;
    Sum 65535, 65535 => 65534;
    Sum 40000, 30000 => 4464;
    Sum 255, 1 => 256;
    Sum 0, 0 => 0;
    Prod 65535, 65535 => 1;
    Prod 65535, 2 => 65534;
    Prod 256, 256 => 0;
    Prod 1000, 1000 => 16960;
    Prod 15, 17 => 255;
    Prod 0, 65535 => 0;
    Min 0, 65535 => 0;
    Min 65535, 0 => 0;
    Min 32768, 32767 => 32767;
    Min 32767, 32768 => 32767;
    Min 255, 256 => 255;
    Max 0, 65535 => 65535;
    Max 32768, 32767 => 32768;
    Max 32767, 32768 => 32768;
    Max 255, 256 => 256;
    Band 65535, 85 => 85;
    Band 32768, 32767 => 0;
    Band 4080, 255 => 240;
    Bor 32768, 32767 => 65535;
    Bor 256, 1 => 257;
    Bor 0, 65535 => 65535;
    Bxor 65535, 85 => 0xffaa;
    Bxor 256, 257 => 1;
    Bxor 65535, 65535 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land 32768, 3 => 1;
    Land 256, 512 => 1;
    Land 256, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor 32768, 0 => 1;
    Lor 0, 256 => 1;
};

const U32: &[Case<u32>] = table! {
    Sum 4294967295, 1 => 0;
    Sum 4294967295, 4294967295 => 4294967294;
    Sum 3000000000, 2000000000 => 705032704;
    Sum 65535, 1 => 65536;
    Sum 0, 0 => 0;
    Prod 4294967295, 4294967295 => 1;
    Prod 4294967295, 2 => 4294967294;
    Prod 65536, 65536 => 0;
    Prod 100000, 100000 => 1410065408;
    Prod 15, 17 => 255;
    Prod 0, 4294967295 => 0;
    Min 0, 4294967295 => 0;
    Min 4294967295, 0 => 0;
    Min 2147483648, 2147483647 => 2147483647;
    Min 2147483647, 2147483648 => 2147483647;
    Min 65535, 65536 => 65535;
    Max 0, 4294967295 => 4294967295;
    Max 2147483648, 2147483647 => 2147483648;
    Max 2147483647, 2147483648 => 2147483648;
    Max 65535, 65536 => 65536;
    Band 4294967295, 85 => 85;
    Band 2147483648, 2147483647 => 0;
    Band 0xffff0000, 0x00ffff00 => 0x00ff0000;
    Bor 2147483648, 2147483647 => 4294967295;
    Bor 0xffff0000, 0x00ffff00 => 0xffffff00;
    Bor 0, 4294967295 => 4294967295;
    Bxor 4294967295, 85 => 0xffffffaa;
    Bxor 0xffff0000, 0x00ffff00 => 0xff00ff00;
    Bxor 4294967295, 4294967295 => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land 2147483648, 3 => 1;
    Land 65536, 16777216 => 1;
    Land 65536, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor 2147483648, 0 => 1;
    Lor 0, 65536 => 1;
};

const U64: &[Case<u64>] = table! {
    Sum u64::MAX, 1 => 0;
    Sum u64::MAX, u64::MAX => 18446744073709551614;
    Sum 10000000000000000000, 10000000000000000000 => 1553255926290448384;
    Sum 4294967295, 1 => 4294967296;
    Sum 0, 0 => 0;
    Prod u64::MAX, u64::MAX => 1;
    Prod u64::MAX, 2 => 18446744073709551614;
    Prod 4294967296, 4294967296 => 0;
    Prod 10000000000, 10000000000 => 7766279631452241920;
    Prod 15, 17 => 255;
    Prod 0, u64::MAX => 0;
    Min 0, u64::MAX => 0;
    Min u64::MAX, 0 => 0;
    Min 9223372036854775808, 9223372036854775807 => 9223372036854775807;
    Min 9223372036854775807, 9223372036854775808 => 9223372036854775807;
    Min 4294967295, 4294967296 => 4294967295;
    Max 0, u64::MAX => u64::MAX;
    Max 9223372036854775808, 9223372036854775807 => 9223372036854775808;
    Max 9223372036854775807, 9223372036854775808 => 9223372036854775808;
    Max 4294967295, 4294967296 => 4294967296;
    Band u64::MAX, 85 => 85;
    Band 9223372036854775808, 9223372036854775807 => 0;
    Band 0xffffffff00000000, 0x0000ffffffff0000 => 0x0000ffff00000000;
    Bor 9223372036854775808, 9223372036854775807 => u64::MAX;
    Bor 0xffffffff00000000, 0x0000ffffffff0000 => 0xffffffffffff0000;
    Bor 0, u64::MAX => u64::MAX;
    Bxor u64::MAX, 85 => 0xffffffffffffffaa;
    Bxor 0xffffffff00000000, 0x0000ffffffff0000 => 0xffff0000ffff0000;
    Bxor u64::MAX, u64::MAX => 0;
    Land 0, 0 => 0;
    Land 0, 5 => 0;
    Land 7, 0 => 0;
    Land 9223372036854775808, 3 => 1;
    Land 4294967296, 1 => 1;
    Land 4294967296, 0 => 0;
    Lor 0, 0 => 0;
    Lor 0, 5 => 1;
    Lor 9223372036854775808, 0 => 1;
    Lor 0, 4294967296 => 1;
};

// Float tables. Special values by bit pattern: two quiet NaNs (the second negative, with a
// payload), the NaN next to infinity (a signalling NaN), the smallest and largest subnormals and the
// smallest normal.

const F32_NAN: f32 = f32::from_bits(0x7fc0_0000);
const F32_NEG_NAN: f32 = f32::from_bits(0xffc0_0001);
const F32_SNAN: f32 = f32::from_bits(0x7f80_0001);
const F32_SUB: f32 = f32::from_bits(0x0000_0001);
const F32_SUB_MAX: f32 = f32::from_bits(0x007f_ffff);
const F32_MIN_NORMAL: f32 = f32::from_bits(0x0080_0000);
const F32_INF: f32 = f32::from_bits(0x7f80_0000);
const F32_NEG_INF: f32 = f32::from_bits(0xff80_0000);
const F32_MAX: f32 = f32::from_bits(0x7f7f_ffff);

const F32: &[Case<f32>] = table! {
    Min 1.0, 2.0 => 1.0;
    Min 2.0, 1.0 => 1.0;
    Min -1.0, -2.0 => -2.0;
    Min -1.5, 1.0 => -1.5;
    Min -0.0, 0.0 => -0.0;
    Min 0.0, -0.0 => -0.0;
    Min -0.0, -0.0 => -0.0;
    Min F32_NAN, 1.0 => F32_NAN;
    Min 1.0, F32_NAN => F32_NAN;
    Min F32_NEG_NAN, F32_NEG_INF => F32_NEG_NAN;
    Min F32_NEG_INF, F32_NEG_NAN => F32_NEG_NAN;
    Min F32_NAN, F32_NEG_NAN => F32_NAN;
    Min F32_NEG_NAN, F32_NAN => F32_NEG_NAN;
    Min F32_SNAN, F32_INF => F32_SNAN;
    Min F32_INF, F32_SNAN => F32_SNAN;
    Min F32_INF, F32_NEG_INF => F32_NEG_INF;
    Min F32_INF, F32_MAX => F32_MAX;
    Min -F32_MAX, F32_NEG_INF => F32_NEG_INF;
    Min F32_SUB, 0.0 => 0.0;
    Min -F32_SUB, -0.0 => -F32_SUB;
    Min -F32_SUB, F32_SUB => -F32_SUB;
    Min F32_SUB_MAX, F32_MIN_NORMAL => F32_SUB_MAX;
    Min -0.0, F32_SUB => -0.0;
    Max 1.0, 2.0 => 2.0;
    Max 2.0, 1.0 => 2.0;
    Max -1.0, -2.0 => -1.0;
    Max -1.5, 1.0 => 1.0;
    Max -0.0, 0.0 => 0.0;
    Max 0.0, -0.0 => 0.0;
    Max -0.0, -0.0 => -0.0;
    Max F32_NAN, 1.0 => F32_NAN;
    Max 1.0, F32_NAN => F32_NAN;
    Max F32_NEG_NAN, F32_NEG_INF => F32_NEG_NAN;
    Max F32_NEG_INF, F32_NEG_NAN => F32_NEG_NAN;
    Max F32_NAN, F32_NEG_NAN => F32_NAN;
    Max F32_NEG_NAN, F32_NAN => F32_NEG_NAN;
    Max F32_SNAN, F32_INF => F32_SNAN;
    Max F32_INF, F32_SNAN => F32_SNAN;
    Max F32_INF, F32_NEG_INF => F32_INF;
    Max F32_INF, F32_MAX => F32_INF;
    Max -F32_MAX, F32_NEG_INF => -F32_MAX;
    Max F32_SUB, 0.0 => F32_SUB;
    Max -F32_SUB, -0.0 => -0.0;
    Max -F32_SUB, F32_SUB => F32_SUB;
    Max F32_SUB_MAX, F32_MIN_NORMAL => F32_MIN_NORMAL;
    Max -F32_SUB, 0.0 => 0.0;
    Sum 1.5, 2.25 => 3.75;
    Sum 1.0, -1.0 => 0.0;
    Sum -0.0, -0.0 => -0.0;
    Sum -0.0, 0.0 => 0.0;
    Sum 0.0, -0.0 => 0.0;
    Sum F32_INF, 1.0 => F32_INF;
    Sum F32_INF, F32_NEG_INF => F32_NAN;
    Sum F32_NAN, 1.0 => F32_NAN;
    Sum 1.0, F32_NEG_NAN => F32_NAN;
    Sum F32_MAX, F32_MAX => F32_INF;
    Sum -F32_MAX, -F32_MAX => F32_NEG_INF;
    Sum F32_SUB, F32_SUB => f32::from_bits(0x0000_0002);
    Sum F32_SUB_MAX, F32_SUB => F32_MIN_NORMAL;
    Prod 1.5, -2.0 => -3.0;
    Prod 0.0, -1.0 => -0.0;
    Prod -0.0, -0.0 => 0.0;
    Prod F32_INF, 0.0 => F32_NAN;
    Prod F32_NEG_INF, -1.0 => F32_INF;
    Prod F32_MIN_NORMAL, 0.5 => f32::from_bits(0x0040_0000);
    Prod F32_SUB, 0.5 => 0.0;
    Prod -F32_SUB, 0.5 => -0.0;
    Prod F32_MAX, 2.0 => F32_INF;
    Prod F32_NAN, 0.0 => F32_NAN;
};

const F64_NAN: f64 = f64::from_bits(0x7ff8_0000_0000_0000);
const F64_NEG_NAN: f64 = f64::from_bits(0xfff8_0000_0000_0001);
const F64_SNAN: f64 = f64::from_bits(0x7ff0_0000_0000_0001);
const F64_SUB: f64 = f64::from_bits(0x0000_0000_0000_0001);
const F64_SUB_MAX: f64 = f64::from_bits(0x000f_ffff_ffff_ffff);
const F64_MIN_NORMAL: f64 = f64::from_bits(0x0010_0000_0000_0000);
const F64_INF: f64 = f64::from_bits(0x7ff0_0000_0000_0000);
const F64_NEG_INF: f64 = f64::from_bits(0xfff0_0000_0000_0000);
const F64_MAX: f64 = f64::from_bits(0x7fef_ffff_ffff_ffff);

const F64: &[Case<f64>] = table! {
    Min 1.0, 2.0 => 1.0;
    Min 2.0, 1.0 => 1.0;
    Min -1.0, -2.0 => -2.0;
    Min -1.5, 1.0 => -1.5;
    Min -0.0, 0.0 => -0.0;
    Min 0.0, -0.0 => -0.0;
    Min -0.0, -0.0 => -0.0;
    Min F64_NAN, 1.0 => F64_NAN;
    Min 1.0, F64_NAN => F64_NAN;
    Min F64_NEG_NAN, F64_NEG_INF => F64_NEG_NAN;
    Min F64_NEG_INF, F64_NEG_NAN => F64_NEG_NAN;
    Min F64_NAN, F64_NEG_NAN => F64_NAN;
    Min F64_NEG_NAN, F64_NAN => F64_NEG_NAN;
    Min F64_SNAN, F64_INF => F64_SNAN;
    Min F64_INF, F64_SNAN => F64_SNAN;
    Min F64_INF, F64_NEG_INF => F64_NEG_INF;
    Min F64_INF, F64_MAX => F64_MAX;
    Min -F64_MAX, F64_NEG_INF => F64_NEG_INF;
    Min F64_SUB, 0.0 => 0.0;
    Min -F64_SUB, -0.0 => -F64_SUB;
    Min -F64_SUB, F64_SUB => -F64_SUB;
    Min F64_SUB_MAX, F64_MIN_NORMAL => F64_SUB_MAX;
    Min -0.0, F64_SUB => -0.0;
    Max 1.0, 2.0 => 2.0;
    Max 2.0, 1.0 => 2.0;
    Max -1.0, -2.0 => -1.0;
    Max -1.5, 1.0 => 1.0;
    Max -0.0, 0.0 => 0.0;
    Max 0.0, -0.0 => 0.0;
    Max -0.0, -0.0 => -0.0;
    Max F64_NAN, 1.0 => F64_NAN;
    Max 1.0, F64_NAN => F64_NAN;
    Max F64_NEG_NAN, F64_NEG_INF => F64_NEG_NAN;
    Max F64_NEG_INF, F64_NEG_NAN => F64_NEG_NAN;
    Max F64_NAN, F64_NEG_NAN => F64_NAN;
    Max F64_NEG_NAN, F64_NAN => F64_NEG_NAN;
    Max F64_SNAN, F64_INF => F64_SNAN;
    Max F64_INF, F64_SNAN => F64_SNAN;
    Max F64_INF, F64_NEG_INF => F64_INF;
    Max F64_INF, F64_MAX => F64_INF;
    Max -F64_MAX, F64_NEG_INF => -F64_MAX;
    Max F64_SUB, 0.0 => F64_SUB;
    Max -F64_SUB, -0.0 => -0.0;
    Max -F64_SUB, F64_SUB => F64_SUB;
    Max F64_SUB_MAX, F64_MIN_NORMAL => F64_MIN_NORMAL;
    Max -F64_SUB, 0.0 => 0.0;
    Sum 1.5, 2.25 => 3.75;
    Sum 1.0, -1.0 => 0.0;
    Sum -0.0, -0.0 => -0.0;
    Sum -0.0, 0.0 => 0.0;
    Sum 0.0, -0.0 => 0.0;
    Sum F64_INF, 1.0 => F64_INF;
    Sum F64_INF, F64_NEG_INF => F64_NAN;
    Sum F64_NAN, 1.0 => F64_NAN;
    Sum 1.0, F64_NEG_NAN => F64_NAN;
    Sum F64_MAX, F64_MAX => F64_INF;
    Sum -F64_MAX, -F64_MAX => F64_NEG_INF;
    Sum F64_SUB, F64_SUB => f64::from_bits(0x0000_0000_0000_0002);
    Sum F64_SUB_MAX, F64_SUB => F64_MIN_NORMAL;
    Prod 1.5, -2.0 => -3.0;
    Prod 0.0, -1.0 => -0.0;
    Prod -0.0, -0.0 => 0.0;
    Prod F64_INF, 0.0 => F64_NAN;
    Prod F64_NEG_INF, -1.0 => F64_INF;
    Prod F64_MIN_NORMAL, 0.5 => f64::from_bits(0x0008_0000_0000_0000);
    Prod F64_SUB, 0.5 => 0.0;
    Prod -F64_SUB, 0.5 => -0.0;
    Prod F64_MAX, 2.0 => F64_INF;
    Prod F64_NAN, 0.0 => F64_NAN;
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables' own premises: every op defined on a type has cases in its table (several, and
    /// both orders of the inputs somewhere), the float tables have none of the integer-only ops,
    /// and the counts add up.
    #[test]
    fn every_op_of_every_type_has_cases() {
        struct Check(Vec<String>, usize);
        impl Visit for Check {
            fn visit<T: Elem>(&mut self) {
                for op in Op::ALL {
                    let n = cases_of::<T>(op).count();
                    let defined = !T::FLOAT || matches!(op, Op::Sum | Op::Prod | Op::Min | Op::Max);
                    if defined && n < 3 {
                        self.0
                            .push(format!("{} {}: only {n} cases", T::DTYPE, op.name()));
                    }
                    if !defined && n > 0 {
                        self.0
                            .push(format!("{} {}: not defined", T::DTYPE, op.name()));
                    }
                }
                self.1 += T::cases().len();
                assert_eq!(T::SIZE * 8, T::DTYPE[1..].parse::<usize>().unwrap());
            }
        }
        let mut c = Check(vec![], 0);
        visit_all(&mut c);
        assert!(c.0.is_empty(), "{:#?}", c.0);
        assert_eq!(c.1, total_cases());
        // As many as written (checked once with arbitrary-precision integers and numpy): a table
        // cut short by an edit fails here.
        assert_eq!(total_cases(), 498);
    }

    /// The special float constants are what their names say (by their bits' meaning, not by any
    /// arithmetic under test).
    #[test]
    fn float_specials_are_what_they_say() {
        assert!(F32_NAN.is_nan() && F32_NEG_NAN.is_nan() && F32_SNAN.is_nan());
        assert!(F32_NEG_NAN.is_sign_negative());
        assert!(F32_SUB.is_subnormal() && F32_SUB_MAX.is_subnormal());
        assert!(F32_MIN_NORMAL.is_normal());
        assert_eq!(F32_MIN_NORMAL.to_bits(), f32::MIN_POSITIVE.to_bits());
        assert_eq!(F32_INF.to_bits(), f32::INFINITY.to_bits());
        assert_eq!(F32_NEG_INF.to_bits(), f32::NEG_INFINITY.to_bits());
        assert_eq!(F32_MAX.to_bits(), f32::MAX.to_bits());
        assert!(F64_NAN.is_nan() && F64_NEG_NAN.is_nan() && F64_SNAN.is_nan());
        assert!(F64_NEG_NAN.is_sign_negative());
        assert!(F64_SUB.is_subnormal() && F64_SUB_MAX.is_subnormal());
        assert!(F64_MIN_NORMAL.is_normal());
        assert_eq!(F64_MIN_NORMAL.to_bits(), f64::MIN_POSITIVE.to_bits());
        assert_eq!(F64_INF.to_bits(), f64::INFINITY.to_bits());
        assert_eq!(F64_NEG_INF.to_bits(), f64::NEG_INFINITY.to_bits());
        assert_eq!(F64_MAX.to_bits(), f64::MAX.to_bits());
    }
}
