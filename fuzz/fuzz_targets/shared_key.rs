#![no_main]
//! Calls `keyflip::fuzzing::shared_key`, the same function the regression test replays.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyflip::fuzzing::shared_key(data);
});
