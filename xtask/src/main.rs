//! `cargo xtask …`: the fiber-rs command line. All logic lives in the library.

fn main() {
    if let Err(e) = xtask::run(std::env::args_os()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
