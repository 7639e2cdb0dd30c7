//! Choosing a subset under a budget: random (the honest baseline), kMQ (Diversify and Conquer's
//! cluster-balanced sampling) and k-center (greedy farthest-point coverage); and the metrics that say
//! how well a subset covers the whole. The stage that runs them over a dataset is [`stage`].

use std::collections::{BTreeMap, HashSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cluster::with_dots;
use crate::error::{Error, Result};
use crate::vector::ROWS_PER_PRODUCT;

pub mod stage;

pub use stage::{select_dataset, SelectOptions, SelectResults, DEFAULT_KMQ_TEMPERATURE};

/// How many rows to select: a count, or a fraction of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    Count(usize),
    Fraction(f64),
}

impl Budget {
    /// `0.005` is a fraction, `200` a count.
    pub fn parse(text: &str) -> Result<Self> {
        let bad =
            || Error::Invalid(format!("budget {text:?}: give a count (e.g. 200) or a fraction in (0, 1] (e.g. 0.05)"));
        if let Ok(n) = text.parse::<usize>() {
            return if n == 0 { Err(bad()) } else { Ok(Budget::Count(n)) };
        }
        match text.parse::<f64>() {
            Ok(f) if f > 0.0 && f <= 1.0 => Ok(Budget::Fraction(f)),
            _ => Err(bad()),
        }
    }

    /// The count for `rows` rows; a fraction rounds to the nearest row (at least one).
    pub fn rows(self, rows: usize) -> Result<usize> {
        let n = match self {
            Budget::Count(n) => n,
            Budget::Fraction(f) => ((rows as f64 * f).round() as usize).max(1),
        };
        if n > rows {
            return Err(Error::Invalid(format!("budget of {n} rows but the dataset has only {rows}")));
        }
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Random,
    /// Repeated random sampling: round r takes the next slice of one seeded permutation, so successive
    /// rounds see fresh rows until the data is used up.
    Rs2,
    Kmq,
    Kcenter,
    /// Score first, skipping rows too similar (cosine) to one already taken.
    Deita,
    /// Diversify and Conquer's iterative kMQ: cluster weights follow the last round's per-cluster scores,
    /// and the round's whole budget is split by them over rows not selected before.
    Iterative,
}

impl Method {
    pub const NAMES: [&'static str; 6] = ["random", "rs2", "kmq", "kcenter", "deita", "iterative"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A chosen row and why it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub row: usize,
    pub reason: String,
}

/// `budget` rows uniformly at random.
pub fn random(rows: usize, budget: usize, seed: u64) -> Vec<Pick> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut picks: Vec<usize> = rand::seq::index::sample(&mut rng, rows, budget).into_vec();
    picks.sort_unstable();
    picks.into_iter().map(|row| Pick { row, reason: "random".into() }).collect()
}

/// RS2 (repeated random sampling without replacement): one permutation of the rows per seed; round `r`
/// takes rows `r·budget ..` of it, wrapping around when the data is used up.
pub fn rs2(rows: usize, budget: usize, round: usize, seed: u64) -> Vec<Pick> {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let start = (round * budget) % rows;
    let mut picks: Vec<Pick> =
        (0..budget).map(|i| Pick { row: order[(start + i) % rows], reason: format!("rs2: round {round}") }).collect();
    picks.sort_by_key(|p| p.row);
    picks
}

/// Deita-style: rows by descending score; a row is taken unless its cosine similarity to a row already
/// taken exceeds `max_similarity`. Stops at the budget (or when no row is left that is different enough).
pub fn deita(embeddings: &[f32], dim: usize, scores: &[f32], budget: usize, max_similarity: f32) -> Vec<Pick> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut taken: Vec<usize> = Vec::with_capacity(budget);
    let mut picks = Vec::with_capacity(budget);
    for row in order {
        if taken.len() == budget {
            break;
        }
        let v = &embeddings[row * dim..(row + 1) * dim];
        let nearest = taken
            .par_iter()
            .map(|&t| embeddings[t * dim..(t + 1) * dim].iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
            .reduce(|| f32::NEG_INFINITY, f32::max);
        if nearest <= max_similarity {
            taken.push(row);
            picks.push(Pick {
                row,
                reason: format!("deita: score {:.4}, nearest taken cos {:.3}", scores[row], nearest.max(-1.0)),
            });
        }
    }
    picks.sort_by_key(|p| p.row);
    picks
}

/// How kMQ picks rows inside a cluster when there is no quality score.
#[derive(Debug, Clone, Copy)]
pub enum Within<'a> {
    /// Uniformly at random (the paper's code).
    Random,
    /// Rows near the cluster's mean embedding (cosine): with temperature 0 the most typical rows; above
    /// 0 drawn with probability ∝ exp(cos / temperature), so central rows are likelier but not certain.
    Central { embeddings: &'a [f32], dim: usize, temperature: f32 },
}

/// `n` rows of `rows` by closeness to their mean embedding: the nearest (temperature 0), or drawn without
/// replacement with probability ∝ exp(cos / temperature) (Gumbel top-n).
fn central(
    embeddings: &[f32],
    dim: usize,
    rows: &[usize],
    n: usize,
    temperature: f32,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<usize> {
    let mut centre = vec![0f32; dim];
    for &r in rows {
        centre.iter_mut().zip(&embeddings[r * dim..(r + 1) * dim]).for_each(|(c, v)| *c += v);
    }
    let mut scored: Vec<(f32, usize)> = rows
        .iter()
        .map(|&r| (embeddings[r * dim..(r + 1) * dim].iter().zip(&centre).map(|(a, b)| a * b).sum::<f32>(), r))
        .collect();
    let norm = centre.iter().map(|c| c * c).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    if temperature > 0.0 {
        for (score, _) in scored.iter_mut() {
            let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            *score = *score / norm / temperature - (-u.ln()).ln() as f32;
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, r)| r).collect()
}

/// kMQ: the budget split equally over clusters (a cluster smaller than its share gives the rest back to the
/// others); within a cluster rows are drawn at random, or — given a quality score per row — by a softmax
/// of the quality (without replacement).
pub fn kmq(clusters: &[u32], budget: usize, quality: Option<&[f32]>, within: Within, seed: u64) -> Result<Vec<Pick>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (row, &c) in clusters.iter().enumerate() {
        members.entry(c).or_default().push(row);
    }
    if budget > clusters.len() {
        return Err(Error::Invalid(format!("budget of {budget} rows but only {} rows", clusters.len())));
    }
    // Water-filling: equal shares, capped by cluster size, leftovers shared again; the last few rows that
    // cannot be shared equally go to randomly chosen clusters.
    let ids: Vec<u32> = members.keys().copied().collect();
    let mut share: BTreeMap<u32, usize> = ids.iter().map(|&c| (c, 0)).collect();
    let mut left = budget;
    loop {
        let open: Vec<u32> = ids.iter().copied().filter(|c| share[c] < members[c].len()).collect();
        if left == 0 || open.is_empty() {
            break;
        }
        let each = left / open.len();
        if each == 0 {
            let mut lucky = open.clone();
            lucky.shuffle(&mut rng);
            for c in lucky.into_iter().take(left) {
                *share.get_mut(&c).expect("cluster") += 1;
            }
            break;
        }
        for c in open {
            let give = each.min(members[&c].len() - share[&c]);
            *share.get_mut(&c).expect("cluster") += give;
            left -= give;
        }
    }
    let mut picks = Vec::with_capacity(budget);
    for (c, rows) in &members {
        let n = share[c];
        if n == 0 {
            continue;
        }
        let chosen: Vec<usize> = match quality {
            // Gumbel top-n: sampling n rows without replacement with probabilities softmax(quality).
            Some(q) => {
                let mut keyed: Vec<(f64, usize)> = rows
                    .iter()
                    .map(|&r| {
                        let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                        (q[r] as f64 - (-u.ln()).ln(), r)
                    })
                    .collect();
                keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
                keyed.into_iter().take(n).map(|(_, r)| r).collect()
            }
            None => match within {
                Within::Random => {
                    rand::seq::index::sample(&mut rng, rows.len(), n).into_iter().map(|i| rows[i]).collect()
                }
                Within::Central { embeddings, dim, temperature } => {
                    central(embeddings, dim, rows, n, temperature, &mut rng)
                }
            },
        };
        let how = match (quality, within) {
            (Some(_), _) => "by quality",
            (None, Within::Random) => "at random",
            (None, Within::Central { temperature, .. }) if temperature <= 0.0 => "nearest the cluster's centre",
            (None, Within::Central { .. }) => "favouring the cluster's centre",
        };
        picks.extend(
            chosen
                .into_iter()
                .map(|row| Pick { row, reason: format!("kmq: cluster {c} ({} rows), {n} drawn {how}", rows.len()) }),
        );
    }
    picks.sort_by_key(|p| p.row);
    Ok(picks)
}

/// How cluster weights follow the last round's per-cluster scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightUpdate {
    /// Diversify and Conquer, Eq. 6: w_j ← w_j · s_j / Σ_c s_c, then normalised (scores must be positive).
    #[default]
    Paper,
    /// The public code's variant: w_j = softmax(s)_j, ignoring the previous weights.
    Softmax,
}

impl WeightUpdate {
    pub const NAMES: [&'static str; 2] = ["paper", "softmax"];
}

/// The next round's cluster weights from the previous weights (uniform when `None`) and the mean score of
/// each cluster's scored rows. Clusters without a score keep their previous weight's share.
pub fn update_weights(
    previous: Option<&BTreeMap<u32, f64>>,
    scores: &BTreeMap<u32, f64>,
    update: WeightUpdate,
) -> Result<BTreeMap<u32, f64>> {
    let clusters: Vec<u32> = match previous {
        Some(p) => p
            .keys()
            .copied()
            .chain(scores.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        None => scores.keys().copied().collect(),
    };
    if clusters.is_empty() {
        return Err(Error::Invalid("no cluster has a score: nothing to update the weights from".into()));
    }
    let prior = |c: u32| previous.and_then(|p| p.get(&c).copied()).unwrap_or(1.0 / clusters.len() as f64);
    // With no score at all (a first round) every cluster counts as average: the weights stay as they were
    // (paper) or even (softmax), instead of 0 / 0.
    let mean_score = if scores.is_empty() { 1.0 } else { scores.values().sum::<f64>() / scores.len() as f64 };
    let raw: Vec<(u32, f64)> = match update {
        WeightUpdate::Paper => {
            if let Some((c, s)) = scores.iter().find(|(_, s)| **s <= 0.0 || !s.is_finite()) {
                return Err(Error::Invalid(format!(
                    "cluster {c} has mean score {s}: the paper's update needs positive scores (use the softmax update)"
                )));
            }
            // An unscored cluster is treated as average.
            clusters.iter().map(|&c| (c, prior(c) * scores.get(&c).copied().unwrap_or(mean_score))).collect()
        }
        WeightUpdate::Softmax => {
            let max = scores.values().copied().fold(mean_score, f64::max);
            clusters.iter().map(|&c| (c, (scores.get(&c).copied().unwrap_or(mean_score) - max).exp())).collect()
        }
    };
    let total: f64 = raw.iter().map(|(_, w)| w).sum();
    Ok(raw.into_iter().map(|(c, w)| (c, w / total)).collect())
}

/// Splits `budget` rows over clusters in proportion to `weights` (largest remainders), never more than a
/// cluster has `available`; what a full cluster cannot take goes to the others by weight. The whole budget
/// is allocated (not budget / k: the public code's issue #8).
pub fn allocate(weights: &BTreeMap<u32, f64>, available: &BTreeMap<u32, usize>, budget: usize) -> BTreeMap<u32, usize> {
    let mut share: BTreeMap<u32, usize> = weights.keys().map(|&c| (c, 0)).collect();
    let mut left = budget.min(available.values().sum());
    while left > 0 {
        let open: Vec<u32> =
            weights.keys().copied().filter(|c| share[c] < available.get(c).copied().unwrap_or(0)).collect();
        let total: f64 = open.iter().map(|c| weights[c]).sum();
        if open.is_empty() {
            break;
        }
        // Ideal shares of what is left; floors first, then the largest remainders.
        let ideal: Vec<(u32, f64)> = open
            .iter()
            .map(|&c| {
                (c, if total > 0.0 { left as f64 * weights[&c] / total } else { left as f64 / open.len() as f64 })
            })
            .collect();
        let mut given = 0;
        let mut remainders = Vec::new();
        for &(c, x) in &ideal {
            let room = available[&c] - share[&c];
            let take = (x.floor() as usize).min(room);
            *share.get_mut(&c).expect("cluster") += take;
            given += take;
            remainders.push((x - x.floor(), c));
        }
        if given == 0 {
            remainders.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, c) in remainders.into_iter().take(left) {
                if share[&c] < available[&c] {
                    *share.get_mut(&c).expect("cluster") += 1;
                    given += 1;
                }
            }
        }
        left -= given;
        if given == 0 {
            break;
        }
    }
    share
}

/// One round of iterative kMQ: `budget` rows split over clusters by `weights` ([`allocate`]), drawn at
/// random among each cluster's rows that are still `available`.
pub fn iterative(
    clusters: &[u32],
    available: &[bool],
    weights: &BTreeMap<u32, f64>,
    budget: usize,
    seed: u64,
) -> Vec<Pick> {
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (row, &c) in clusters.iter().enumerate() {
        if available[row] {
            members.entry(c).or_default().push(row);
        }
    }
    let sizes: BTreeMap<u32, usize> = members.iter().map(|(&c, rows)| (c, rows.len())).collect();
    let shares = allocate(weights, &sizes, budget);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut picks = Vec::with_capacity(budget);
    for (c, n) in shares {
        let Some(rows) = members.get(&c).filter(|_| n > 0) else { continue };
        let w = weights[&c];
        picks.extend(rand::seq::index::sample(&mut rng, rows.len(), n).into_iter().map(|i| Pick {
            row: rows[i],
            reason: format!("iterative: cluster {c} (weight {w:.4}), {n} of {} left", rows.len()),
        }));
    }
    picks.sort_by_key(|p| p.row);
    picks
}

/// k-center: start from a random row, then repeatedly take the row farthest (cosine distance) from
/// everything taken so far.
pub fn kcenter(embeddings: &[f32], dim: usize, budget: usize, seed: u64) -> Vec<Pick> {
    let n = embeddings.len() / dim;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut nearest = vec![f32::INFINITY; n];
    let mut picks = Vec::with_capacity(budget);
    let mut next = rng.gen_range(0..n);
    for step in 0..budget {
        let distance = if step == 0 { f32::NAN } else { nearest[next] };
        picks.push(Pick {
            row: next,
            reason: if step == 0 {
                "kcenter: random start".into()
            } else {
                format!("kcenter: farthest, distance {distance:.4}")
            },
        });
        let c = &embeddings[next * dim..(next + 1) * dim];
        nearest[next] = f32::NEG_INFINITY; // never taken twice, even among exact duplicates
        nearest.par_iter_mut().zip(embeddings.par_chunks(dim)).for_each(|(d, r)| {
            let dot: f32 = r.iter().zip(c).map(|(a, b)| a * b).sum();
            *d = d.min(1.0 - dot);
        });
        next = nearest
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
            .unwrap_or(0);
    }
    picks.sort_by_key(|p| p.row);
    picks
}

/// How well a selection covers the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub selected: usize,
    pub rows: usize,
    /// Rows the distances were measured from: all of them, or a uniform sample of a large input.
    pub distance_rows: usize,
    /// Mean and max over those rows of the cosine distance (1 − cos) to the nearest selected row.
    pub mean_distance: f64,
    pub max_distance: f64,
    /// Entropy (nats) of the selection's distribution over clusters, and its maximum ln(k).
    pub cluster_entropy: Option<f64>,
    pub max_entropy: Option<f64>,
    /// Distinct labels in the selection, and in the whole dataset.
    pub labels_covered: Option<usize>,
    pub labels_total: Option<usize>,
}

/// Rows × selected distances past which the distance metrics are measured on a uniform sample of rows: 2²⁷
/// pairs (26,843 rows for 5,000 picks: the mean's standard error is under 1% of the distances' spread) take
/// about a second on two cores; 2³⁰ took a third of selecting 0.5% of a million rows.
const COVERAGE_FULL_PAIRS: usize = 1 << 27;

/// Coverage metrics of `picks` (embeddings are L2-normalised, so a dot product is a cosine). On large
/// inputs the distances are measured from a uniform sample of rows drawn with `seed` (`distance_rows` says
/// how many): the mean is then an estimate and the max a lower bound.
pub fn coverage(
    embeddings: &[f32],
    dim: usize,
    picks: &[usize],
    clusters: Option<&[u32]>,
    labels: Option<&[String]>,
    seed: u64,
) -> Result<Coverage> {
    let n = embeddings.len() / dim;
    if picks.is_empty() {
        return Err(Error::Invalid("nothing selected".into()));
    }
    let chosen: Vec<f32> = picks.iter().flat_map(|&r| embeddings[r * dim..(r + 1) * dim].iter().copied()).collect();
    let sampled: Vec<f32>;
    let measured = if n.saturating_mul(picks.len()) <= COVERAGE_FULL_PAIRS {
        embeddings
    } else {
        let take = (COVERAGE_FULL_PAIRS / picks.len()).clamp(1, n);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xc07e);
        let mut rows = rand::seq::index::sample(&mut rng, n, take).into_vec();
        rows.sort_unstable();
        sampled = rows.iter().flat_map(|&r| embeddings[r * dim..(r + 1) * dim].iter().copied()).collect();
        &sampled
    };
    let mut nearest = vec![0f64; measured.len() / dim];
    with_dots(measured, dim, &chosen, nearest.par_chunks_mut(ROWS_PER_PRODUCT), |nearest, _, dots| {
        for (d, row) in nearest.iter_mut().zip(dots.chunks(picks.len())) {
            let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            *d = (1.0 - best as f64).max(0.0);
        }
    });
    let (cluster_entropy, max_entropy) = match clusters {
        Some(c) => {
            let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
            picks.iter().for_each(|&r| *counts.entry(c[r]).or_default() += 1);
            let total = picks.len() as f64;
            let h = -counts.values().map(|&k| k as f64 / total).map(|p| p * p.ln()).sum::<f64>();
            let k = c.iter().collect::<HashSet<_>>().len();
            (Some(h), Some((k as f64).ln()))
        }
        None => (None, None),
    };
    let (labels_covered, labels_total) = match labels {
        Some(l) => (
            Some(picks.iter().map(|&r| &l[r]).collect::<HashSet<_>>().len()),
            Some(l.iter().collect::<HashSet<_>>().len()),
        ),
        None => (None, None),
    };
    Ok(Coverage {
        selected: picks.len(),
        rows: n,
        distance_rows: nearest.len(),
        mean_distance: nearest.iter().sum::<f64>() / nearest.len() as f64,
        max_distance: nearest.iter().copied().fold(0.0, f64::max),
        cluster_entropy,
        max_entropy,
        labels_covered,
        labels_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_check() {
        assert_eq!(Budget::parse("200").unwrap(), Budget::Count(200));
        assert_eq!(Budget::parse("0.005").unwrap().rows(41_813).unwrap(), 209);
        assert!(Budget::parse("1.5").is_err() && Budget::parse("0").is_err() && Budget::parse("x").is_err());
        let e = Budget::Count(50).rows(10).unwrap_err().to_string();
        assert!(e.contains("50") && e.contains("10"), "{e}");
    }

    #[test]
    fn kmq_balances_clusters_and_gives_back_what_small_ones_cannot_use() {
        // Cluster 0: 100 rows, 1: 3 rows, 2: 50 rows; budget 30 → 3 from cluster 1, the rest split.
        let clusters: Vec<u32> = (0..100).map(|_| 0).chain((0..3).map(|_| 1)).chain((0..50).map(|_| 2)).collect();
        let picks = kmq(&clusters, 30, None, Within::Random, 1).unwrap();
        assert_eq!(picks.len(), 30);
        let per = |c: u32| picks.iter().filter(|p| clusters[p.row] == c).count();
        assert_eq!(per(1), 3);
        assert!((per(0) as i64 - per(2) as i64).abs() <= 1, "{} {}", per(0), per(2));
        let rows: HashSet<usize> = picks.iter().map(|p| p.row).collect();
        assert_eq!(rows.len(), 30, "no row twice");
        assert_eq!(kmq(&clusters, 30, None, Within::Random, 1).unwrap(), picks, "same seed, same picks");
        // With quality, the best rows are much more likely.
        let quality: Vec<f32> = (0..153).map(|i| if i % 10 == 0 { 10.0 } else { 0.0 }).collect();
        let picks = kmq(&clusters, 10, Some(&quality), Within::Random, 2).unwrap();
        assert!(picks.iter().filter(|p| p.row % 10 == 0).count() >= 8);
    }

    #[test]
    fn weights_follow_scores_and_the_allocation_uses_the_whole_budget() {
        let scores: BTreeMap<u32, f64> = [(0, 1.0), (1, 3.0)].into();
        let w = update_weights(None, &scores, WeightUpdate::Paper).unwrap();
        assert!((w[&0] - 0.25).abs() < 1e-12 && (w[&1] - 0.75).abs() < 1e-12, "{w:?}");
        // Multiplicative: a second round with the same scores sharpens further.
        let w2 = update_weights(Some(&w), &scores, WeightUpdate::Paper).unwrap();
        assert!((w2[&1] - 0.9).abs() < 1e-12, "{w2:?}");
        let s = update_weights(Some(&w), &scores, WeightUpdate::Softmax).unwrap();
        assert!((s[&1] - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-12, "softmax ignores the previous weights");
        // A first round scores nothing yet: the weights stay as they were (paper) or even (softmax), never NaN.
        let prior: BTreeMap<u32, f64> = [(0, 0.2), (1, 0.8)].into();
        let none = BTreeMap::new();
        assert_eq!(update_weights(Some(&prior), &none, WeightUpdate::Paper).unwrap(), prior);
        let even = update_weights(Some(&prior), &none, WeightUpdate::Softmax).unwrap();
        assert_eq!(even, [(0, 0.5), (1, 0.5)].into());
        assert!(update_weights(None, &[(0, -1.0)].into(), WeightUpdate::Paper)
            .unwrap_err()
            .to_string()
            .contains("softmax"));
        // 100 rows by weights 1:3, but cluster 1 has only 50 left: it takes 50, cluster 0 the other 50.
        let a = allocate(&w, &[(0, 500), (1, 50)].into(), 100);
        assert_eq!((a[&0], a[&1]), (50, 50));
        let a = allocate(&w, &[(0, 500), (1, 500)].into(), 10);
        assert_eq!((a[&0], a[&1]), (2, 8), "2.5 and 7.5: the row left over goes to the heavier cluster");
    }

    #[test]
    fn rs2_rounds_take_fresh_rows() {
        let a: HashSet<usize> = rs2(100, 30, 0, 9).iter().map(|p| p.row).collect();
        let b: HashSet<usize> = rs2(100, 30, 1, 9).iter().map(|p| p.row).collect();
        let c: HashSet<usize> = rs2(100, 30, 2, 9).iter().map(|p| p.row).collect();
        assert_eq!(a.len() + b.len() + c.len(), 90);
        assert!(a.is_disjoint(&b) && b.is_disjoint(&c) && a.is_disjoint(&c), "no row twice in three rounds");
        assert_eq!(rs2(100, 30, 4, 9).len(), 30, "wraps around past the end");
    }

    #[test]
    fn deita_prefers_high_scores_but_skips_near_copies() {
        // Rows 0 and 1 are the same direction with the top scores; row 2 is different.
        let e = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let picks: Vec<usize> = deita(&e, 2, &[0.9, 0.8, 0.5, 0.1], 2, 0.9).iter().map(|p| p.row).collect();
        assert_eq!(picks, [0, 2]);
    }

    #[test]
    fn kcenter_covers_better_than_random_on_spread_points() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let dim = 8;
        let mut data: Vec<f32> = (0..2000 * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        for r in data.chunks_mut(dim) {
            let n = crate::vector::sq_norm(r).sqrt();
            r.iter_mut().for_each(|v| *v /= n);
        }
        let kc: Vec<usize> = kcenter(&data, dim, 40, 0).iter().map(|p| p.row).collect();
        let rnd: Vec<usize> = random(2000, 40, 0).iter().map(|p| p.row).collect();
        let (a, b) =
            (coverage(&data, dim, &kc, None, None, 0).unwrap(), coverage(&data, dim, &rnd, None, None, 0).unwrap());
        assert!(a.max_distance < b.max_distance, "{a:?} {b:?}");
    }
}
