//! The engine behind the `mt` command-line tool for the MedTrinity-25M workflow:
//! [`cmd`] is the command-line layer (arguments, run directories), [`core`] the library
//! it drives. The public items are those the binary, the integration tests, the examples
//! and the fuzz targets use; everything else is crate-private. ARCHITECTURE.md describes
//! the layout and the rules the code keeps.
#![warn(unreachable_pub)]
#![warn(missing_docs)]
pub mod cmd;
pub mod core;
