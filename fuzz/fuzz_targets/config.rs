//! The config loader and checker (`renkei check --offline`, and a pushed config's first pass)
//! on arbitrary bytes: TOML syntax, types, every rule, and the diagnostics' rendering with
//! file, line and field. Files the config names are not read (`Files::Skip`): the target stays
//! deterministic and touches nothing on the machine.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use renkei::config::{self, Files};

fuzz_target!(|data: &[u8]| {
    // The loader's own first step for a file (`read_bounded`) refuses non-UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/fuzz/renkei.toml");
    match config::load_str_with(text, file, Path::new("/fuzz"), Files::Skip) {
        Ok(config) => {
            let _ = config.summary();
        }
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                let _ = d.to_string();
            }
        }
    }
});
