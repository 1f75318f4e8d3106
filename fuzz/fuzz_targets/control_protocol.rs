#![no_main]
//! Calls `keyflip::fuzzing::control_protocol`, the same function the regression test replays.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyflip::fuzzing::control_protocol(data);
});
