#![warn(unreachable_pub)]
pub mod cmd;
pub mod core;
