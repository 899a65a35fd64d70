//! The synthetic catalog: N products in categories, with Zipf popularity, from a seed.
//!
//! Pure and deterministic: the same `(n, seed)` gives the same products, and the load
//! generator rebuilds the same popularity ranking with [`ProductSampler`] to request
//! product ids the way real shoppers do (a few products get most of the views). Nothing
//! here touches a database; `db::seed_catalog` writes the generated rows.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Categories products are spread over.
pub const CATEGORIES: &[&str] = &[
    "books", "music", "garden", "toys", "kitchen", "sports", "tools", "games", "office", "pets",
];

/// Zipf exponent used for popularity.
pub const ZIPF_EXPONENT: f64 = 1.0;

/// One generated product.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    /// 1..=n
    pub id: i64,
    /// Human-readable name.
    pub name: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Price in cents, 99..=99_999.
    pub price_cents: i64,
    /// Units in stock.
    pub stock: i64,
    /// Share of views this product gets (Zipf over the popularity rank; sums to 1).
    pub popularity: f64,
}

/// Product ids 1..=n in popularity order (most popular first), from the seed.
fn ranking(n: u64, seed: u64) -> Vec<i64> {
    let mut ids: Vec<i64> = (1..=n as i64).collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    ids.shuffle(&mut rng);
    ids
}

/// Zipf weights for ranks 1..=n, normalised to sum to 1.
fn zipf_weights(n: u64, s: f64) -> Vec<f64> {
    let raw: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// Generates `n` products from `seed`: ids 1..=n, categories, prices, stock, and Zipf
/// popularity over a seeded ranking.
pub fn generate(n: u64, seed: u64) -> Vec<NewProduct> {
    let ranked = ranking(n, seed);
    let weights = zipf_weights(n, ZIPF_EXPONENT);
    let mut popularity = vec![0.0; n as usize];
    for (rank, id) in ranked.iter().enumerate() {
        popularity[(*id - 1) as usize] = weights[rank];
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed_ca7a_1060);
    (1..=n as i64)
        .map(|id| {
            let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
            NewProduct {
                id,
                name: format!("{category} item {id}"),
                category: category.to_string(),
                price_cents: rng.random_range(99..=99_999),
                stock: rng.random_range(10..=10_000),
                popularity: popularity[(id - 1) as usize],
            }
        })
        .collect()
}

/// Draws product ids with the catalog's Zipf popularity (same `n` and `seed` as
/// [`generate`]), for load generators.
#[derive(Debug, Clone)]
pub struct ProductSampler {
    ids_by_rank: Vec<i64>,
    cdf: Vec<f64>,
}

impl ProductSampler {
    /// The sampler for the catalog `generate(n, seed)`. `n` must be at least 1.
    pub fn new(n: u64, seed: u64) -> Self {
        let n = n.max(1);
        let mut acc = 0.0;
        let cdf = zipf_weights(n, ZIPF_EXPONENT)
            .into_iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Self {
            ids_by_rank: ranking(n, seed),
            cdf,
        }
    }

    /// The product id for a uniform draw `u` in [0, 1). Pure, for replayable tests.
    pub fn id_for(&self, u: f64) -> i64 {
        let rank = self
            .cdf
            .partition_point(|c| *c <= u)
            .min(self.cdf.len() - 1);
        self.ids_by_rank[rank]
    }

    /// Draws one product id.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        self.id_for(rng.random::<f64>())
    }

    /// The `k` most popular product ids, most popular first.
    pub fn top(&self, k: usize) -> &[i64] {
        &self.ids_by_rank[..k.min(self.ids_by_rank.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_complete() {
        let a = generate(500, 7);
        assert_eq!(a, generate(500, 7));
        assert_ne!(a, generate(500, 8));
        assert_eq!(a.len(), 500);
        let total: f64 = a.iter().map(|p| p.popularity).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(a.iter().all(|p| CATEGORIES.contains(&p.category.as_str())));
        // More than a few categories are used.
        let used: std::collections::HashSet<_> = a.iter().map(|p| &p.category).collect();
        assert!(used.len() >= 5);
    }

    #[test]
    fn sampler_is_zipf_and_matches_the_catalog() {
        let n = 1000;
        let products = generate(n, 3);
        let s = ProductSampler::new(n, 3);
        let top = s.top(1)[0];
        let most_popular = products
            .iter()
            .max_by(|a, b| a.popularity.total_cmp(&b.popularity))
            .unwrap();
        assert_eq!(top, most_popular.id);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let draws = 20_000;
        let mut hits_top10 = 0;
        let top10: Vec<i64> = s.top(10).to_vec();
        for _ in 0..draws {
            let id = s.sample(&mut rng);
            assert!((1..=n as i64).contains(&id));
            if top10.contains(&id) {
                hits_top10 += 1;
            }
        }
        // Zipf(1) over 1000: the top 10 carry ~39% of the mass; uniform would give 1%.
        let share = hits_top10 as f64 / draws as f64;
        assert!(share > 0.3 && share < 0.5, "top-10 share {share}");
    }
}
