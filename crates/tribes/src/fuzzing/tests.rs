use super::*;

/// What `cargo xtask fuzz --seeds` checks, run with the unit tests: every seed
/// passes its target (and the targets compile outside the fuzzer too).
#[test]
fn every_seed_passes_its_target() {
    for (name, seed) in seed_frames() {
        eprintln!("frame_decode {name}");
        frame_decode(&seed);
    }
    for (name, seed) in seed_headers() {
        eprintln!("membership_decode {name}");
        membership_decode(&seed);
    }
    for (name, seed) in seed_handshakes() {
        eprintln!("handshake {name}");
        handshake_offer(&seed);
        handshake_answer(&seed);
    }
}
