//! linfa-clustering's own k-means on the same embeddings as `whet kmeans`, for the k-means benchmark:
//! `cargo run --release -p whetstone-curation --example linfa_kmeans -- EMBEDDED.parquet K ITERS [SEED]`.
//! Prints fit seconds and inertia (sum of squared distances), and whetstone's on the same data and seed.

use std::time::Instant;

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand::SeedableRng;
use whetstone_curation::cluster::{kmeans, KMeansOptions};
use whetstone_curation::embed::embeddings_of;
use whetstone_datasets::{read_all, ReadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, k, iters, rest @ ..] = args.as_slice() else {
        return Err("usage: linfa_kmeans EMBEDDED.parquet K ITERS [SEED]".into());
    };
    let (k, iters): (usize, usize) = (k.parse()?, iters.parse()?);
    let seed: u64 = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let (batches, reader) = read_all(path, ReadOptions::default())?;
    let batch = arrow::compute::concat_batches(&reader.schema(), &batches)?;
    let (data, dim) = embeddings_of(&batch)?;
    let n = data.len() / dim;

    let records = Array2::from_shape_vec((n, dim), data.to_vec())?;
    let dataset = DatasetBase::from(records);
    let rng = rand_xoshiro::Xoshiro256Plus::seed_from_u64(seed);
    let params = KMeans::params_with_rng(k, rng)
        .init_method(KMeansInit::KMeansPlusPlus)
        .max_n_iterations(iters as u64)
        .tolerance(f32::MIN_POSITIVE); // linfa refuses 0: this tolerance still runs every iteration
    let t = Instant::now();
    let model = params.fit(&dataset)?;
    let linfa_seconds = t.elapsed().as_secs_f64();
    // linfa reports inertia per row.
    let linfa_inertia = model.inertia() as f64 * n as f64;

    let t = Instant::now();
    let (ours, _) = kmeans(data, dim, &KMeansOptions { max_iter: iters, tol: 0.0, ..KMeansOptions::new(k, seed) })?;
    let our_seconds = t.elapsed().as_secs_f64();
    println!("{n} × {dim}, k = {k}, {iters} iterations");
    println!("linfa-clustering  {linfa_seconds:>8.2} s  inertia {linfa_inertia:.2}");
    println!("whetstone         {our_seconds:>8.2} s  inertia {:.2}", ours.inertia);
    println!(
        "whetstone is {:.1}× faster, inertia ratio {:.3}",
        linfa_seconds / our_seconds,
        ours.inertia / linfa_inertia
    );
    Ok(())
}
