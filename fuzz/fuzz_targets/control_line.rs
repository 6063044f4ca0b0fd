//! The control socket's line protocol (`renkei status`, `connect`, `disconnect`): the daemon's
//! own bounded reader (`status::control::read_request`) over arbitrary bytes, as a client of
//! the socket could send them.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use renkei::status::control::read_request;
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = runtime().block_on(read_request(data));
});
