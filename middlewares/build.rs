//! Builds libdeflate's compressor a second time, with hash tables for small inputs
//! (`libdeflate/README.md`).

fn main() {
    println!("cargo:rerun-if-changed=libdeflate");
    cc::Build::new()
        .file("libdeflate/small.c")
        .include("libdeflate")
        .warnings(false)
        .compile("parapet_small_deflate");
}
