"""Network heads: the SPIN / HMR iterative regressor (``hmr``)."""
