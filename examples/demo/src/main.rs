//! Run with `cargo run -p tribes-demo`. (The demo arrives with the layer.)
fn main() {}
