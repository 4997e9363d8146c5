pub mod cmd;
pub mod core;
