//! Compact chunk lists: three flat arrays instead of one object per chunk.

/// Chunks in input order: absolute offsets, lengths, 32-byte BLAKE3 digests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub offsets: Vec<u64>,
    pub lengths: Vec<u32>,
    pub digests: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    pub fn push(&mut self, offset: u64, length: usize, digest: &[u8; 32]) {
        self.offsets.push(offset);
        // Lengths fit: max_size is at most 16 MiB (validated).
        self.lengths.push(length as u32);
        self.digests.extend_from_slice(digest);
    }

    pub fn digest(&self, i: usize) -> &[u8] {
        &self.digests[i * 32..(i + 1) * 32]
    }

    pub fn append(&mut self, other: Batch) {
        self.offsets.extend(other.offsets);
        self.lengths.extend(other.lengths);
        self.digests.extend(other.digests);
    }

    pub fn total_length(&self) -> u64 {
        self.lengths.iter().map(|&l| u64::from(l)).sum()
    }
}
