//! `mt convert image`: DICOM and NIfTI -> PNG/JPEG with metadata beside.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::Context;
use crate::core::error::Failure;

/// `mt convert image`.
#[derive(Debug, clap::Args, Serialize)]
pub struct ImageArgs {
    /// DICOM / NIfTI files or folders.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `mt convert image`.
pub fn run(_args: &ImageArgs, _ctx: &mut Context) -> Result<()> {
    Err(Failure::NotImplemented("convert image").into())
}
