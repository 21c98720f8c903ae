//! Reading objects back: a stream of pieces fetched from the pool, a bounded
//! number at a time.

use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use strata_pool::ExtentId;

use crate::error::{Result, StoreError};
use crate::records::ObjectInfo;
use crate::store::Store;

/// An object's bytes as a stream; memory stays bounded by [`READ_AHEAD`] pieces.
pub type ObjectReader = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Size of one pool read: large enough to amortise a request, small enough that a
/// slow client holds little memory.
const READ_PIECE: u64 = 1024 * 1024;
/// Pieces fetched ahead of the one being sent.
const READ_AHEAD: usize = 2;

impl Store {
    /// Streams the bytes `range` (all of them when `None`) of the object `info`
    /// describes. The caller has clamped `range` to the object's size.
    pub fn read(&self, info: &ObjectInfo, range: Option<Range<u64>>) -> ObjectReader {
        let range = range.unwrap_or(0..info.size);
        if range.start > range.end || range.end > info.size {
            let err = StoreError::InvalidArgument(format!(
                "range {}..{} outside an object of {} bytes",
                range.start, range.end, info.size
            ));
            return Box::pin(stream::once(async move { Err(err) }));
        }
        if let Some(inline) = &info.inline {
            // A record whose size says more than its inline body holds is
            // damaged (or was sent so): an error, never a panic.
            let Some(piece) = usize::try_from(range.end)
                .ok()
                .filter(|end| *end <= inline.len())
                .map(|end| inline.slice(range.start as usize..end))
            else {
                let err = StoreError::Corrupt(format!(
                    "a record of {} bytes with {} inline",
                    info.size,
                    inline.len()
                ));
                return Box::pin(stream::once(async move { Err(err) }));
            };
            return Box::pin(stream::once(async move { Ok(piece) }));
        }
        let pieces = plan_pieces(info, range);
        let pool = self.pool().clone();
        Box::pin(
            stream::iter(pieces)
                .map(move |(id, offset, len)| {
                    let pool = pool.clone();
                    async move {
                        pool.read_extent(id, offset, len)
                            .await
                            .map_err(StoreError::from)
                    }
                })
                .buffered(READ_AHEAD),
        )
    }
}

/// The (extent, offset, length) reads that cover `range`, in order.
fn plan_pieces(info: &ObjectInfo, range: Range<u64>) -> Vec<(ExtentId, u64, u64)> {
    let mut pieces = Vec::new();
    let mut extent_start = 0u64;
    for extent in &info.extents {
        let extent_end = extent_start + extent.len;
        let from = range.start.max(extent_start);
        let to = range.end.min(extent_end);
        let mut offset = from;
        while offset < to {
            let len = READ_PIECE.min(to - offset);
            pieces.push((extent.id, offset - extent_start, len));
            offset += len;
        }
        extent_start = extent_end;
        if extent_start >= range.end {
            break;
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ExtentRef, ObjectMeta};

    fn object(extent_lens: &[u64]) -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: extent_lens.iter().sum(),
            etag: String::new(),
            last_modified_ms: 0,
            meta: ObjectMeta::default(),
            checksum: None,
            part_sizes: Vec::new(),
            extents: extent_lens
                .iter()
                .enumerate()
                .map(|(idx, len)| ExtentRef {
                    id: ExtentId([idx as u8; 16]),
                    len: *len,
                })
                .collect(),
            inline: None,
            copy_nonce: None,
        }
    }

    fn check(extent_lens: &[u64], range: Range<u64>, expected: &[(u8, u64, u64)]) {
        let got: Vec<(u8, u64, u64)> = plan_pieces(&object(extent_lens), range)
            .into_iter()
            .map(|(id, offset, len)| (id.0[0], offset, len))
            .collect();
        assert_eq!(got, expected);
    }

    /// A record whose size passes its inline body reads as damaged.
    #[tokio::test]
    async fn an_inline_body_shorter_than_its_record_is_an_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = crate::store::tests::store_in(dir.path());
        let mut info = object(&[]);
        info.size = 10;
        info.inline = Some(Bytes::from_static(b"short"));
        let mut read = store.read(&info, Some(2..10));
        assert!(matches!(
            read.next().await,
            Some(Err(StoreError::Corrupt(_)))
        ));
        let mut read = store.read(&info, Some(1..4));
        assert_eq!(
            read.next().await.and_then(Result::ok).as_deref(),
            Some(&b"hor"[..])
        );
    }

    #[test]
    fn pieces_cover_ranges_across_extents() {
        const M: u64 = READ_PIECE;
        check(&[10], 0..10, &[(0, 0, 10)]);
        check(&[10, 10], 5..15, &[(0, 5, 5), (1, 0, 5)]);
        check(&[10, 10], 10..20, &[(1, 0, 10)]);
        check(
            &[3 * M],
            M / 2..3 * M,
            &[(0, M / 2, M), (0, 3 * M / 2, M), (0, 5 * M / 2, M / 2)],
        );
        check(&[10, 10, 10], 0..0, &[]);
    }
}
