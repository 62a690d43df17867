//! `ftvm run`: boot the virt board. (Owned by the board work; placeholder until it lands.)

/// Options of `ftvm run`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the command; returns the process exit code.
pub fn main(_a: Args) -> i32 {
    eprintln!("ftvm run: not available in this build");
    2
}
