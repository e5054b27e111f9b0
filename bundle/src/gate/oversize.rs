//! What a pusher is told when a push is over the remote's size limit.
//!
//! git enforces the limit itself (`receive.maxInputSize`) and says only `fatal: pack exceeds
//! maximum allowed size`. The gate relays receive-pack's output to the client packet by packet
//! and, right after that message on the progress band, adds its own: the limit and the
//! manifest key that raises it. Everything else passes through byte for byte.

use std::io::{self, Read, Write};

use crate::gate::settings::{GateSettings, Remote};

/// git's own message for a pack over `receive.maxInputSize` (unpack-objects and index-pack).
const GIT_OVERSIZE: &[u8] = b"pack exceeds maximum allowed size";
/// The side-band channel git prints as `remote: …` (progress and errors).
const BAND_PROGRESS: u8 = 2;

/// The sentence that says how large a push to `remote` may be and how the operator raises it.
pub(crate) fn raise_hint(settings: &GateSettings, remote: &Remote) -> String {
    format!(
        "bottle gate: pushes to `{name}` may be at most {limit}. Push fewer or smaller commits, \
         or the operator raises the limit with `MaxPushMB` on the `{name}` git entry of the \
         bottle's manifest and starts the bottle again.",
        name = remote.name,
        limit = size(settings.push_limit(remote)),
    )
}

/// `bytes` in MiB when it is a whole number of them (as the manifest sets it), else in KiB.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Copies receive-pack's output (`from`) to the client (`to`) pkt-line by pkt-line, adding
/// `hint` on the progress band after git's oversize message. Output that is not pkt-lines is
/// copied as it is.
pub(crate) fn relay(mut from: impl Read, mut to: impl Write, hint: &str) -> io::Result<()> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 4];
        let got = read_full(&mut from, &mut header)?;
        to.write_all(&header[..got])?;
        if got < header.len() {
            return to.flush();
        }
        let Some(len) = std::str::from_utf8(&header)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            // Not a pkt-line stream: pass the rest through untouched.
            io::copy(&mut from, &mut to)?;
            return to.flush();
        };
        if len < 4 {
            // flush-pkt (0000), delim-pkt (0001), response-end (0002): no payload.
            to.flush()?;
            continue;
        }
        payload.resize(len - 4, 0);
        let got = read_full(&mut from, &mut payload)?;
        to.write_all(&payload[..got])?;
        if got < payload.len() {
            // Cut short: forwarded as it came; git's own client reports the broken stream.
            return to.flush();
        }
        if payload.first() == Some(&BAND_PROGRESS) && contains(&payload, GIT_OVERSIZE) {
            to.write_all(&progress_packet(hint))?;
        }
        to.flush()?;
    }
}

/// `hint` as one side-band progress packet, on a line of its own.
fn progress_packet(hint: &str) -> Vec<u8> {
    let body = format!("{hint}\n");
    let body = &body.as_bytes()[..body.len().min(MAX_PAYLOAD - 1)];
    let mut packet = format!("{:04x}", body.len() + 5).into_bytes();
    packet.push(BAND_PROGRESS);
    packet.extend_from_slice(body);
    packet
}

/// Largest pkt-line payload (`LARGE_PACKET_DATA_MAX`).
const MAX_PAYLOAD: usize = 65516;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fills `buf` as far as the input goes; how many bytes it holds.
fn read_full(from: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match from.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        let mut p = format!("{:04x}", payload.len() + 4).into_bytes();
        p.extend_from_slice(payload);
        p
    }

    fn relayed(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        relay(input, &mut out, "HINT").unwrap();
        out
    }

    #[test]
    fn the_hint_follows_gits_oversize_message_and_nothing_else_changes() {
        let mut input = pkt(b"0000000000000000000000000000000000000000 capabilities^{}\0report-status side-band-64k\n");
        input.extend_from_slice(b"0000");
        input.extend(pkt(
            b"\x02fatal: pack exceeds maximum allowed size        \n",
        ));
        let report = pkt(b"\x010019unpack index-pack abnormal exit\n0000");
        input.extend(&report);
        input.extend_from_slice(b"0000");
        let out = relayed(&input);
        let split = input.len() - report.len() - 4;
        assert_eq!(&out[..split], &input[..split]);
        let added = &out[split..out.len() - report.len() - 4];
        assert_eq!(added, b"000a\x02HINT\n");
        assert_eq!(&out[out.len() - report.len() - 4..], &input[split..]);
    }

    #[test]
    fn limits_read_as_the_manifest_writes_them() {
        assert_eq!(size(100 << 20), "100 MiB");
        assert_eq!(size(16 * 1024), "16 KiB");
        assert_eq!(size(1), "1 KiB");
    }

    #[test]
    fn a_stream_without_the_message_passes_byte_for_byte() {
        let mut input = pkt(b"\x02Resolving deltas: 100% (3/3)\n");
        input.extend(pkt(b"\x01000eunpack ok\n0000"));
        input.extend_from_slice(b"0000");
        assert_eq!(relayed(&input), input);
        // The message on the data band is the client's business, not a progress line.
        let data = pkt(b"\x01pack exceeds maximum allowed size");
        assert_eq!(relayed(&data), data);
    }

    #[test]
    fn output_that_is_not_pkt_lines_or_is_cut_short_passes_through() {
        assert_eq!(relayed(b"garbage, not hex"), b"garbage, not hex");
        assert_eq!(relayed(b"0010\x02short"), b"0010\x02short");
        assert_eq!(relayed(b"00"), b"00");
    }
}
