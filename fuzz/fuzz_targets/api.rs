//! Fuzzes the C ABI with sequences of calls, good and bad, each checked against
//! the model of the contract in `tests/support/api_model.rs`: one byte of input
//! per choice (which function, which key, which handle, which fault). A
//! mismatch panics, which libFuzzer reports as a crash with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/api_model.rs"]
mod api_model;

fuzz_target!(|data: &[u8]| {
    let interp = api_model::Interp::new(api_model::FromBytes { data, at: 0 });
    if let Err(mismatch) = interp.run(4096) {
        panic!("{mismatch}");
    }
});
