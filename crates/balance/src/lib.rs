//! Pure load-balancing core: backend sets, selection strategies, health state, outlier ejection, retry budget, slow start. No I/O.
