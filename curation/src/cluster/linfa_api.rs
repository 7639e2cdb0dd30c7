//! whetstone's k-means behind linfa's traits: [`KMeansOptions`] fits a linfa dataset of f32 rows and the
//! fitted [`KMeans`] predicts through `linfa::traits::Predict`, so code written against linfa-clustering's
//! API (`params.fit(&dataset)?`, `model.predict(&records)`) runs this implementation unchanged.

use std::borrow::Cow;

use linfa::traits::{Fit, PredictInplace};
use linfa::DatasetBase;
use ndarray::{Array1, ArrayBase, Data, Ix2};

use super::{assign, kmeans, KMeans, KMeansOptions};
use crate::error::{Error, Result};

/// The rows as one row-major slice, copied only when the array is not laid out that way already.
fn rows<D: Data<Elem = f32>>(x: &ArrayBase<D, Ix2>) -> Cow<'_, [f32]> {
    match x.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().copied().collect()),
    }
}

impl<D: Data<Elem = f32>, T> Fit<ArrayBase<D, Ix2>, T, Error> for KMeansOptions {
    type Object = KMeans;

    fn fit(&self, dataset: &DatasetBase<ArrayBase<D, Ix2>, T>) -> Result<KMeans> {
        let x = dataset.records();
        Ok(kmeans(&rows(x), x.ncols(), self)?.0)
    }
}

impl<D: Data<Elem = f32>> PredictInplace<ArrayBase<D, Ix2>, Array1<usize>> for KMeans {
    /// The nearest centroid of every row. Panics, as linfa's own k-means does, when the number of targets or
    /// the rows' dimension does not match.
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<usize>) {
        assert_eq!(x.nrows(), y.len(), "the number of rows must match the number of targets");
        assert_eq!(x.ncols(), self.dim, "rows of dimension {} for a model of dimension {}", x.ncols(), self.dim);
        let (labels, _) = assign(&rows(x), self.dim, &self.centroids).expect("a matrix product of matching shapes");
        y.iter_mut().zip(labels).for_each(|(y, l)| *y = l as usize);
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<usize> {
        Array1::zeros(x.nrows())
    }
}

#[cfg(test)]
mod tests {
    use linfa::traits::Predict;
    use ndarray::Array2;

    use super::*;

    #[test]
    fn fits_and_predicts_through_linfa_traits() {
        let data: Vec<f32> = (0..400).map(|i| ((i / 2) % 4) as f32 * 10.0 + (i % 7) as f32 * 0.1).collect();
        let records = Array2::from_shape_vec((200, 2), data.clone()).unwrap();
        let opts = KMeansOptions::new(4, 3);
        let model = opts.fit(&DatasetBase::from(records.clone())).unwrap();
        let (direct, labels) = kmeans(&data, 2, &opts).unwrap();
        assert_eq!(model.centroids, direct.centroids, "the same fit as the function");
        let predicted: Array1<usize> = model.predict(&records);
        assert!(predicted.iter().zip(&labels).all(|(&p, &l)| p == l as usize));
        // A column-major view is read the same.
        let transposed = records.t().to_owned();
        let again: Array1<usize> = model.predict(&transposed.t());
        assert_eq!(again, predicted);
    }
}
