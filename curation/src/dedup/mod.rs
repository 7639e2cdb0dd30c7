//! Deduplication stages: a dropped row names the kept row it duplicates (`dup_of`) in the rejected rows.
//!
//! - [`exact`]: equal text once normalised;
//! - [`minhash`]: near duplicates by word-shingle Jaccard similarity (MinHash LSH);
//! - [`semantic`]: embedding cosine similarity (SemDeDup's clusters, or an HNSW graph).

pub mod exact;
pub mod minhash;
pub mod semantic;

/// Union-find over row indices, the smaller index as the root so groups are stable.
pub(crate) struct Groups(Vec<u32>);

impl Groups {
    /// `n` rows, each alone.
    pub(crate) fn new(n: usize) -> Self {
        Groups((0..n as u32).collect())
    }
    pub(crate) fn root(&mut self, mut x: u32) -> u32 {
        while self.0[x as usize] != x {
            let parent = self.0[x as usize];
            self.0[x as usize] = self.0[parent as usize];
            x = parent;
        }
        x
    }
    pub(crate) fn join(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.0[hi as usize] = lo;
        }
    }
}
