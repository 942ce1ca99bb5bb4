"""Label sources besides FairFace, one module each, read in their official layouts
(facellm.data.sources.registry lists them all, FairFace included)."""
