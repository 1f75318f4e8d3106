#![no_main]
//! Calls `keyflip::fuzzing::azure_responses`, the same function the regression test replays.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyflip::fuzzing::azure_responses(data);
});
