"""Reading result records back: side-by-side comparison tables (`compare`) and the paper's figures (`plot`)."""
