#![no_main]
//! Calls `keyflip::fuzzing::plan_parse`, the same function the regression test replays.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyflip::fuzzing::plan_parse(data);
});
