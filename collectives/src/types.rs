//! Element types, reduction ops and collective signatures.

use boad_common::{coll, dtype, op};

/// Element type of a buffer, as seen on the wire and by the C and Python bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// `i8`
    I8 = dtype::I8,
    /// `i16`
    I16 = dtype::I16,
    /// `i32`
    I32 = dtype::I32,
    /// `i64`
    I64 = dtype::I64,
    /// `u8`
    U8 = dtype::U8,
    /// `u16`
    U16 = dtype::U16,
    /// `u32`
    U32 = dtype::U32,
    /// `u64`
    U64 = dtype::U64,
    /// `f32`
    F32 = dtype::F32,
    /// `f64`
    F64 = dtype::F64,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 10] = [
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::F32,
        DType::F64,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        dtype::size(self as u8)
    }

    /// True for `f32` and `f64`.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// The dtype with wire code `code`.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.get(code as usize).copied()
    }

    /// Lower-case name (`"i32"`, `"f64"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Reduction operation.
///
/// Integer `Sum` and `Prod` wrap on overflow. `Min`/`Max` on floats return NaN if any input is NaN and
/// order `-0.0` below `0.0`. Bitwise and logical ops are defined on integers only; `Land`/`Lor` give
/// 1 or 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Sum.
    Sum = op::SUM,
    /// Product.
    Prod = op::PROD,
    /// Minimum.
    Min = op::MIN,
    /// Maximum.
    Max = op::MAX,
    /// Bitwise and.
    Band = op::BAND,
    /// Bitwise or.
    Bor = op::BOR,
    /// Bitwise xor.
    Bxor = op::BXOR,
    /// Logical and.
    Land = op::LAND,
    /// Logical or.
    Lor = op::LOR,
}

impl Op {
    /// Every op, in code order.
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

    /// The op with wire code `code`.
    pub fn from_code(code: u8) -> Option<Op> {
        Op::ALL.get(code as usize).copied()
    }

    /// True if the op is defined for `dtype` (bitwise and logical ops are integer-only).
    pub const fn supports(self, dtype: DType) -> bool {
        !dtype.is_float() || matches!(self, Op::Sum | Op::Prod | Op::Min | Op::Max)
    }

    /// Lower-case name (`"sum"`, `"band"`, ...).
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

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An element type boad can send and reduce.
///
/// # Safety
/// `DTYPE` must describe `Self` exactly (size and representation): the runtime reinterprets buffers
/// of `Self` as buffers of `DTYPE`. Implemented by boad for the ten supported primitive types; there
/// is no reason to implement it elsewhere.
pub unsafe trait Element: bytemuck::Pod {
    /// The wire dtype of `Self`.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        // SAFETY: $t is the primitive type that DType::$d names, with the same size and layout.
        unsafe impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    )*};
}
element!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64,
         f32 => F32, f64 => F64);

/// Which collective a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Coll {
    /// Broadcast.
    Bcast = coll::BCAST,
    /// Reduce to a root.
    Reduce = coll::REDUCE,
    /// Allreduce.
    Allreduce = coll::ALLREDUCE,
    /// Allgather.
    Allgather = coll::ALLGATHER,
    /// Barrier.
    Barrier = coll::BARRIER,
}

impl Coll {
    /// The collective with wire code `code`.
    pub fn from_code(code: u8) -> Option<Coll> {
        [
            Coll::Bcast,
            Coll::Reduce,
            Coll::Allreduce,
            Coll::Allgather,
            Coll::Barrier,
        ]
        .into_iter()
        .find(|c| *c as u8 == code)
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Coll::Bcast => "bcast",
            Coll::Reduce => "reduce",
            Coll::Allreduce => "allreduce",
            Coll::Allgather => "allgather",
            Coll::Barrier => "barrier",
        }
    }
}

/// What a rank called: every rank of a collective must make the same call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The collective.
    pub coll: Coll,
    /// Reduction op (None for bcast, allgather, barrier).
    pub op: Option<Op>,
    /// Element type (None for barrier).
    pub dtype: Option<DType>,
    /// Element count (per rank for allgather).
    pub count: u64,
    /// Root (0 where there is none).
    pub root: u32,
}

impl Signature {
    /// Wire codes (coll, op, dtype).
    pub(crate) fn codes(&self) -> (u8, u8, u8) {
        (
            self.coll as u8,
            self.op.map_or(op::NONE, |o| o as u8),
            self.dtype.map_or(dtype::NONE, |d| d as u8),
        )
    }

    /// Rebuilds a signature from wire codes; None if a code is unknown.
    pub(crate) fn from_codes(c: u8, o: u8, d: u8, count: u64, root: u32) -> Option<Signature> {
        Some(Signature {
            coll: Coll::from_code(c)?,
            op: if o == op::NONE {
                None
            } else {
                Some(Op::from_code(o)?)
            },
            dtype: if d == dtype::NONE {
                None
            } else {
                Some(DType::from_code(d)?)
            },
            count,
            root,
        })
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.coll == Coll::Barrier {
            return f.write_str("barrier()");
        }
        write!(f, "{}(", self.coll.name())?;
        let mut parts = Vec::new();
        if let Some(d) = self.dtype {
            parts.push(format!("count={}, dtype={d}", self.count));
        }
        if let Some(o) = self.op {
            parts.push(format!("op={o}"));
        }
        if matches!(self.coll, Coll::Bcast | Coll::Reduce) {
            parts.push(format!("root={}", self.root));
        }
        write!(f, "{})", parts.join(", "))
    }
}

/// Which data path carried a collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Userspace UDP sockets.
    Udp,
    /// Shared memory between the ranks of one host.
    Shm,
    /// The eBPF kernel path: XDP folds contributions, TC clones broadcasts.
    Kernel,
    /// Hierarchical: shared memory inside each host, userspace UDP between one leader per host.
    Hier,
    /// Hierarchical with the kernel path between the leaders: shared memory inside each host,
    /// XDP folds and TC clones between one leader per host.
    HierKernel,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 5] = [
        Path::Kernel,
        Path::Udp,
        Path::Shm,
        Path::Hier,
        Path::HierKernel,
    ];

    /// `"udp"`, `"shm"`, `"kernel"`, `"hier"`, `"hier-kernel"`.
    pub const fn name(self) -> &'static str {
        match self {
            Path::Udp => "udp",
            Path::Shm => "shm",
            Path::Kernel => "kernel",
            Path::Hier => "hier",
            Path::HierKernel => "hier-kernel",
        }
    }

    /// [`name`](Self::name) as a C string (for the C bindings).
    pub const fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Path::Udp => c"udp",
            Path::Shm => c"shm",
            Path::Kernel => c"kernel",
            Path::Hier => c"hier",
            Path::HierKernel => c"hier-kernel",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
