//! `events::decode` on an arbitrary ring buffer record, then what the agent reads from the
//! decoded event first: its header, `comm`, the path or filename text, and for payload
//! records the captured bytes through the payload classifier (with the record's own, possibly
//! lying, length fields).

#![no_main]

use std::time::{Duration, SystemTime};

use keytrail::{
    credential::Classifier,
    events::{self, KernelEvent},
    wire,
};
use libfuzzer_sys::fuzz_target;

/// The bytes of `data` the record says are in use.
fn captured(data: &[u8], captured: u32) -> &[u8] {
    &data[..(captured as usize).min(data.len())]
}

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
        KernelEvent::NetPayload(e) => {
            let c = Classifier::new(b"fuzz", Duration::from_secs(86400));
            let _ = wire::classify_payload(captured(&e.data, e.captured), &c, SystemTime::now());
        }
        KernelEvent::TlsWrite(e) => {
            let c = Classifier::new(b"fuzz", Duration::from_secs(86400));
            let _ = wire::classify_payload(captured(&e.data, e.captured), &c, SystemTime::now());
        }
        KernelEvent::EnvVar(e) => {
            let _ = events::text(&e.data, e.len);
        }
        KernelEvent::CgroupChange(e) => {
            let _ = events::text(&e.path, e.path_len);
        }
        KernelEvent::ProcExit(_)
        | KernelEvent::NetConnect(_)
        | KernelEvent::NetState(_) => {}
    }
});
