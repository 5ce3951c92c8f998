//! Truncated JPEG files. The `image` crate's decoder fills the rows of a JPEG cut off inside
//! its compressed data and reports no error, so a file that lost its tail would train as a
//! half-grey image. Walking the file's marker segments up to its end-of-image marker finds
//! the cut without decoding anything.

/// Why the JPEG file `bytes` (starting with the start-of-image marker `FF D8`) is cut off, or
/// `None` when its segments run to an end-of-image marker (`FF D9`). Segments are skipped by
/// their length (so thumbnails inside Exif segments are not mistaken for the end), compressed
/// data is scanned up to the next marker; bytes after the end-of-image marker are ignored.
pub(crate) fn truncation(bytes: &[u8]) -> Option<String> {
    let len = bytes.len();
    let cut = |inside: &str| {
        Some(format!(
            "truncated JPEG: the file ends at byte {len} inside {inside}, before its end-of-image marker"
        ))
    };
    let mut pos = 2;
    loop {
        // A marker: one or more 0xFF fill bytes and a code. Stray bytes between segments are
        // skipped, as decoders do.
        while pos < len && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < len && bytes[pos] == 0xFF {
            pos += 1;
        }
        if pos >= len {
            return cut("the marker segments");
        }
        let code = bytes[pos];
        pos += 1;
        match code {
            0xD9 => return None,
            // Markers without a length: start of image, TEM, restart markers.
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if pos + 2 > len {
            return cut("a segment header");
        }
        let length = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        pos += length;
        if pos > len {
            return cut("a segment");
        }
        if code == 0xDA {
            // Compressed data after a start-of-scan header runs to the next marker that is
            // neither a stuffed 0xFF (FF 00) nor a restart marker.
            loop {
                if pos + 1 >= len {
                    return cut("the compressed image data");
                }
                let next = bytes[pos + 1];
                if bytes[pos] == 0xFF
                    && next != 0x00
                    && next != 0xFF
                    && !(0xD0..=0xD7).contains(&next)
                {
                    break;
                }
                pos += 1;
            }
        }
    }
}

/// Whether `bytes` start like a JPEG file (start-of-image marker followed by a marker).
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}
