//! Compiles `orca/v1/*.proto` with the vendored protoc, so no system protoc is needed, and
//! writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = ["orca/v1/types.proto", "orca/v1/orchestrator.proto", "orca/v1/worker.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        // Undecodable input is INVALID_ARGUMENT (src/codec.rs).
        .codec_path("crate::codec::OrcaCodec")
        // Most results carry no git result: boxed, it costs a pointer instead of its size.
        .boxed(".orca.v1.TaskResult.git")
        .file_descriptor_set_path(out.join("orca_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    Ok(())
}
