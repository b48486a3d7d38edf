//! `events::decode` on an arbitrary ring buffer record, then what the agent reads from the
//! decoded event first: its header, `comm`, and the path or filename text.

#![no_main]

use keytrail::events::{self, KernelEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let event = match events::decode(data) {
        Ok(event) => event,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = events::comm(event.header());
    match &event {
        KernelEvent::FileOpen(e) => {
            let _ = events::text(&e.path, e.path_len);
        }
        KernelEvent::ProcExec(e) => {
            let _ = events::text(&e.filename, e.filename_len);
        }
        KernelEvent::ProcExit(_) => {}
    }
});
