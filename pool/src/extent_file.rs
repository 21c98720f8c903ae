//! On-disk format of one extent file.
//!
//! ```text
//! data (N bytes) | CRC32C of each 64 KiB block (u32 LE each) | trailer (24 bytes)
//! trailer = magic "SXT1" | N (u64 LE) | CRC32C of the table (u32 LE)
//!         | CRC32C of the 16 bytes before it (u32 LE) | 4 zero bytes
//! ```
//!
//! Per-block checksums let a ranged read verify only the blocks it touches. The
//! trailer comes last so a torn write (crash before fsync) fails validation instead of
//! looking like a short extent.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

pub const BLOCK_LEN: usize = 64 * 1024;
const MAGIC: &[u8; 4] = b"SXT1";
const TRAILER_LEN: usize = 24;

/// Why a file failed validation; the caller attaches the extent id.
#[derive(Debug, PartialEq, Eq)]
pub enum FormatError {
    Truncated,
    BadTrailer,
    BadTable,
    BadBlock(usize),
    OutOfRange { extent_len: u64 },
}

pub fn block_count(data_len: usize) -> usize {
    data_len.div_ceil(BLOCK_LEN)
}

/// The data length of a well-formed extent file of `file_len` bytes, from its
/// size alone (a damaged file is the auditor's to find).
pub fn data_len(file_len: u64) -> u64 {
    let rest = file_len.saturating_sub(TRAILER_LEN as u64);
    // Each block is its data and a 4-byte checksum; only the last is short.
    let blocks = rest.div_ceil(BLOCK_LEN as u64 + 4);
    rest.saturating_sub(4 * blocks)
}

/// Writes data, checksum table and trailer. The caller fsyncs.
pub fn write(file: &mut File, data: &[u8]) -> io::Result<()> {
    let mut tail = Vec::with_capacity(block_count(data.len()) * 4 + TRAILER_LEN);
    for block in data.chunks(BLOCK_LEN) {
        tail.extend_from_slice(&crc32c::crc32c(block).to_le_bytes());
    }
    let table_crc = crc32c::crc32c(&tail);
    let mut trailer = [0u8; TRAILER_LEN];
    trailer[0..4].copy_from_slice(MAGIC);
    trailer[4..12].copy_from_slice(&(data.len() as u64).to_le_bytes());
    trailer[12..16].copy_from_slice(&table_crc.to_le_bytes());
    let trailer_crc = crc32c::crc32c(&trailer[0..16]);
    trailer[16..20].copy_from_slice(&trailer_crc.to_le_bytes());
    tail.extend_from_slice(&trailer);
    file.write_all(data)?;
    file.write_all(&tail)
}

/// Reads `len` bytes at `offset`, verifying the trailer, the table and every block
/// the range touches. Returns `Ok(Err(_))` for a file that is there but invalid.
pub fn read_range(file: &File, offset: u64, len: u64) -> io::Result<Result<Vec<u8>, FormatError>> {
    let file_len = file.metadata()?.len();
    let (data_len, trailer) = match read_trailer(file, file_len)? {
        Ok(found) => found,
        Err(err) => return Ok(Err(err)),
    };
    let n_blocks = block_count_u64(data_len);
    if data_len + n_blocks * 4 + TRAILER_LEN as u64 != file_len {
        return Ok(Err(FormatError::Truncated));
    }
    let end = match offset.checked_add(len) {
        Some(end) if end <= data_len => end,
        _ => {
            return Ok(Err(FormatError::OutOfRange {
                extent_len: data_len,
            }));
        }
    };
    if len == 0 {
        return Ok(Ok(Vec::new()));
    }
    let mut table = vec![0u8; (n_blocks * 4) as usize];
    file.read_exact_at(&mut table, data_len)?;
    let table_crc = u32::from_le_bytes([trailer[12], trailer[13], trailer[14], trailer[15]]);
    if crc32c::crc32c(&table) != table_crc {
        return Ok(Err(FormatError::BadTable));
    }

    let block = BLOCK_LEN as u64;
    let first_block = offset / block;
    let last_block = (end - 1) / block;
    let read_start = first_block * block;
    let read_end = ((last_block + 1) * block).min(data_len);
    let mut buf = vec![0u8; (read_end - read_start) as usize];
    file.read_exact_at(&mut buf, read_start)?;
    for (idx, chunk) in buf.chunks(BLOCK_LEN).enumerate() {
        let block_idx = first_block as usize + idx;
        let at = block_idx * 4;
        let expected = u32::from_le_bytes([table[at], table[at + 1], table[at + 2], table[at + 3]]);
        if crc32c::crc32c(chunk) != expected {
            return Ok(Err(FormatError::BadBlock(block_idx)));
        }
    }
    let skip = (offset - read_start) as usize;
    buf.drain(..skip);
    buf.truncate(len as usize);
    Ok(Ok(buf))
}

/// Reads and verifies the whole extent: every block, the table and the trailer.
pub fn read_all(file: &File) -> io::Result<Result<Vec<u8>, FormatError>> {
    let file_len = file.metadata()?.len();
    match read_trailer(file, file_len)? {
        Ok((data_len, _)) => read_range(file, 0, data_len),
        Err(err) => Ok(Err(err)),
    }
}

/// The data length the trailer records, and the trailer.
fn read_trailer(
    file: &File,
    file_len: u64,
) -> io::Result<Result<(u64, [u8; TRAILER_LEN]), FormatError>> {
    if file_len < TRAILER_LEN as u64 {
        return Ok(Err(FormatError::Truncated));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, file_len - TRAILER_LEN as u64)?;
    Ok(match parse_trailer(&trailer) {
        Some(data_len) => Ok((data_len, trailer)),
        None => Err(FormatError::BadTrailer),
    })
}

fn block_count_u64(data_len: u64) -> u64 {
    data_len.div_ceil(BLOCK_LEN as u64)
}

fn parse_trailer(trailer: &[u8; TRAILER_LEN]) -> Option<u64> {
    if &trailer[0..4] != MAGIC {
        return None;
    }
    let stored_crc = u32::from_le_bytes([trailer[16], trailer[17], trailer[18], trailer[19]]);
    if crc32c::crc32c(&trailer[0..16]) != stored_crc {
        return None;
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&trailer[4..12]);
    Some(u64::from_le_bytes(len_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(data: &[u8]) -> (tempfile::NamedTempFile, File) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut file = tmp.reopen().unwrap();
        write(&mut file, data).unwrap();
        (tmp, file)
    }

    fn check(data_len: usize, offset: u64, len: u64, expected: Result<(), FormatError>) {
        let data: Vec<u8> = (0..data_len).map(|i| (i * 7 % 251) as u8).collect();
        let (_tmp, file) = written(&data);
        let got = read_range(&file, offset, len).unwrap();
        match expected {
            Ok(()) => {
                let range = offset as usize..(offset + len) as usize;
                assert_eq!(
                    got.unwrap(),
                    &data[range],
                    "len {data_len} at {offset}+{len}"
                );
            }
            Err(err) => assert_eq!(got.unwrap_err(), err),
        }
    }

    #[test]
    fn data_len_from_file_len() {
        for len in [
            0,
            1,
            100,
            BLOCK_LEN - 1,
            BLOCK_LEN,
            BLOCK_LEN + 1,
            3 * BLOCK_LEN,
            4 << 20,
        ] {
            let (_file, opened) = written(&vec![7u8; len]);
            let file_len = opened.metadata().unwrap().len();
            assert_eq!(data_len(file_len), len as u64, "{len} bytes");
        }
    }

    #[test]
    fn ranges_read_back() {
        let b = BLOCK_LEN as u64;
        check(0, 0, 0, Ok(()));
        check(1, 0, 1, Ok(()));
        check(10, 3, 4, Ok(()));
        check(BLOCK_LEN, 0, b, Ok(()));
        check(3 * BLOCK_LEN + 5, b - 1, b + 2, Ok(()));
        check(3 * BLOCK_LEN + 5, 3 * b, 5, Ok(()));
        check(4 * 1024 * 1024, 1, 4 * 1024 * 1024 - 2, Ok(()));
        check(10, 5, 6, Err(FormatError::OutOfRange { extent_len: 10 }));
        let data = vec![3u8; BLOCK_LEN + 1];
        assert_eq!(read_all(&written(&data).1).unwrap(), Ok(data));
        check(
            10,
            u64::MAX,
            2,
            Err(FormatError::OutOfRange { extent_len: 10 }),
        );
    }

    #[test]
    fn corruption_is_detected() {
        let data = vec![9u8; 2 * BLOCK_LEN];
        let (tmp, file) = written(&data);
        // Flip one byte in the second block.
        let writer = tmp.reopen().unwrap();
        writer.write_all_at(&[8], BLOCK_LEN as u64 + 10).unwrap();
        assert_eq!(read_range(&file, 0, 10).unwrap(), Ok(vec![9u8; 10]));
        assert_eq!(
            read_range(&file, 0, 2 * BLOCK_LEN as u64).unwrap(),
            Err(FormatError::BadBlock(1))
        );
    }

    #[test]
    fn torn_files_are_rejected() {
        let data = vec![1u8; 1000];
        let (tmp, file) = written(&data);
        let len = file.metadata().unwrap().len();
        for cut in [0, 10, len - 1] {
            tmp.as_file().set_len(cut).unwrap();
            let got = read_range(&file, 0, 10).unwrap();
            assert!(got.is_err(), "file cut to {cut} bytes was accepted");
        }
    }
}
