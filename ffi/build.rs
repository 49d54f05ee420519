//! Gives the shared library the soname it is installed under (ffi/install.sh copies
//! `libboad_ffi.so` to `PREFIX/lib/libboad.so`).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libboad.so");
    println!("cargo:rerun-if-changed=build.rs");
}
