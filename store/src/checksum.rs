//! Body digests computed while a body streams into the pool.

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

/// The additional checksums S3 clients may attach to a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// Parses the algorithm's name as clients write it (`CRC32`, `crc64nvme` …).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algo| algo.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }
}

/// What [`crate::Store::stage`] measured of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub md5: [u8; 16],
    /// SHA-256 of the body, when asked for (SigV4 signed payloads).
    pub sha256: Option<[u8; 32]>,
    /// The requested additional checksum, raw bytes.
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

const CRC64_NVME: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_NVME);

enum ChecksumState {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc::Digest<'static, u64>),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

/// Running state of every digest a body needs.
pub struct BodyHasher {
    md5: Md5,
    sha256: Option<sha2::Sha256>,
    checksum: Option<ChecksumState>,
}

impl BodyHasher {
    pub fn new(want_sha256: bool, checksum: Option<ChecksumAlgorithm>) -> Self {
        let checksum = checksum.map(|algo| match algo {
            ChecksumAlgorithm::Crc32 => ChecksumState::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => ChecksumState::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => ChecksumState::Crc64Nvme(CRC64_NVME.digest()),
            ChecksumAlgorithm::Sha1 => ChecksumState::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => ChecksumState::Sha256(sha2::Sha256::new()),
        });
        BodyHasher {
            md5: Md5::new(),
            sha256: want_sha256.then(sha2::Sha256::new),
            checksum,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(data);
        }
        match &mut self.checksum {
            None => {}
            Some(ChecksumState::Crc32(hasher)) => hasher.update(data),
            Some(ChecksumState::Crc32c(crc)) => *crc = crc32c::crc32c_append(*crc, data),
            Some(ChecksumState::Crc64Nvme(digest)) => digest.update(data),
            Some(ChecksumState::Sha1(hasher)) => hasher.update(data),
            Some(ChecksumState::Sha256(hasher)) => hasher.update(data),
        }
    }

    pub fn finish(self) -> Digests {
        let checksum = self.checksum.map(|state| match state {
            ChecksumState::Crc32(hasher) => (
                ChecksumAlgorithm::Crc32,
                hasher.finalize().to_be_bytes().to_vec(),
            ),
            ChecksumState::Crc32c(crc) => (ChecksumAlgorithm::Crc32c, crc.to_be_bytes().to_vec()),
            ChecksumState::Crc64Nvme(digest) => (
                ChecksumAlgorithm::Crc64Nvme,
                digest.finalize().to_be_bytes().to_vec(),
            ),
            ChecksumState::Sha1(hasher) => (ChecksumAlgorithm::Sha1, hasher.finalize().to_vec()),
            ChecksumState::Sha256(hasher) => {
                (ChecksumAlgorithm::Sha256, hasher.finalize().to_vec())
            }
        });
        Digests {
            md5: self.md5.finalize().into(),
            sha256: self.sha256.map(|hasher| hasher.finalize().into()),
            checksum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn check(algo: ChecksumAlgorithm, input: &[u8], expected_base64: &str) {
        let mut hasher = BodyHasher::new(false, Some(algo));
        // Split the input to prove the state carries across updates.
        let (head, tail) = input.split_at(input.len() / 2);
        hasher.update(head);
        hasher.update(tail);
        let (got_algo, got) = hasher.finish().checksum.unwrap();
        assert_eq!(got_algo, algo);
        let got = base64::engine::general_purpose::STANDARD.encode(got);
        assert_eq!(got, expected_base64, "{algo:?}");
    }

    #[test]
    fn known_answers() {
        // Values as the AWS SDKs compute them for "hello world".
        check(ChecksumAlgorithm::Crc32, b"hello world", "DUoRhQ==");
        check(ChecksumAlgorithm::Crc32c, b"hello world", "yZRlqg==");
        check(
            ChecksumAlgorithm::Sha1,
            b"hello world",
            "Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
        );
        check(
            ChecksumAlgorithm::Sha256,
            b"hello world",
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
        );
        check(ChecksumAlgorithm::Crc64Nvme, b"hello world", "jSnVw/bqjr4=");
    }

    #[test]
    fn md5_is_always_computed() {
        let mut hasher = BodyHasher::new(true, None);
        hasher.update(b"");
        let digests = hasher.finish();
        assert_eq!(hex::encode(digests.md5), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            hex::encode(digests.sha256.unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(
            ChecksumAlgorithm::parse("crc64nvme"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
        assert_eq!(
            ChecksumAlgorithm::parse("CRC32C"),
            Some(ChecksumAlgorithm::Crc32c)
        );
        assert_eq!(ChecksumAlgorithm::parse("md5"), None);
    }
}
