//! The WireGuard UAPI socket's line protocol (`wg show`): the daemon's own bounded reader
//! (`tunnel::read_uapi_request`) over arbitrary bytes, as a client of the socket could send
//! them (`get=1`, `set=1` and anything else).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use renkei::tunnel::read_uapi_request;
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
    let _ = runtime().block_on(read_uapi_request(data));
});
