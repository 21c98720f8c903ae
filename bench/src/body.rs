//! Request bodies generated on the fly.
//!
//! A [`PatternBody`] streams `len` bytes cut from one shared block of
//! pseudo-random bytes, one frame per window, without copying: every frame is
//! a reference-counted slice of the same buffer. A 1 GiB PUT therefore holds
//! 2 MiB of memory, shared by all connections, and costs the client nothing
//! but the syscalls. The bytes are not compressible, and each object starts
//! at a different offset in the block so that two objects are not byte-equal.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Bytes per frame, and the period after which a body repeats itself.
pub const WINDOW: usize = 1 << 20;

/// The shared source every body is cut from: `2 * WINDOW` bytes, so that any
/// window starting in the first half is contiguous.
#[derive(Debug, Clone)]
pub struct PatternSource {
    block: Bytes,
}

impl PatternSource {
    /// Fills the block from a fixed-seed SplitMix64 stream: deterministic
    /// across runs, incompressible, and cheap.
    pub fn new() -> Self {
        let mut state: u64 = 0x05EE_D0F5_7A7A;
        let mut block = Vec::with_capacity(2 * WINDOW);
        while block.len() < 2 * WINDOW {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut mixed = state;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            mixed ^= mixed >> 31;
            block.extend_from_slice(&mixed.to_le_bytes());
        }
        PatternSource {
            block: Bytes::from(block),
        }
    }

    /// A body of `len` bytes; `seed` (the key index) picks where in the block
    /// it starts.
    pub fn body(&self, len: u64, seed: u64) -> PatternBody {
        // 4099 is prime, so consecutive keys start at well-spread offsets.
        let offset = (seed.wrapping_mul(4099) % WINDOW as u64) as usize;
        PatternBody {
            block: self.block.clone(),
            offset,
            remaining: len,
        }
    }
}

impl Default for PatternSource {
    fn default() -> Self {
        PatternSource::new()
    }
}

/// A request body: `remaining` more bytes of the pattern, or nothing.
#[derive(Debug, Clone)]
pub struct PatternBody {
    block: Bytes,
    offset: usize,
    remaining: u64,
}

impl PatternBody {
    /// The body of a request that carries none (GET, HEAD, DELETE, listing).
    pub fn empty() -> Self {
        PatternBody {
            block: Bytes::new(),
            offset: 0,
            remaining: 0,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let frame_len = this.remaining.min(WINDOW as u64) as usize;
        let frame = this.block.slice(this.offset..this.offset + frame_len);
        this.remaining -= frame_len as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn check(len: u64, seed: u64, expected_frames: usize) {
        let source = PatternSource::new();
        let body = source.body(len, seed);
        assert_eq!(body.size_hint().exact(), Some(len));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (n_frames, n_bytes) = runtime.block_on(async move {
            let mut body = body;
            let mut n_frames = 0usize;
            let mut n_bytes = 0u64;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                assert!(data.len() <= WINDOW);
                n_frames += 1;
                n_bytes += data.len() as u64;
            }
            (n_frames, n_bytes)
        });
        assert_eq!((n_frames, n_bytes), (expected_frames, len), "len {len}");
    }

    #[test]
    fn frames() {
        check(0, 0, 0);
        check(1, 0, 1);
        check(4096, 7, 1);
        check(WINDOW as u64, 123_456, 1);
        check(WINDOW as u64 + 1, u64::MAX, 2);
        check(10 * WINDOW as u64 + 5, 3, 11);
    }

    #[test]
    fn objects_differ() {
        let source = PatternSource::new();
        let first = source.body(4096, 1);
        let second = source.body(4096, 2);
        assert_ne!(
            first.block.slice(first.offset..first.offset + 4096),
            second.block.slice(second.offset..second.offset + 4096)
        );
    }
}
