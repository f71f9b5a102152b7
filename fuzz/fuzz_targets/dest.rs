#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdmaft_fuzz::dest(data));
