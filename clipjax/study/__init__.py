"""The seeds study: the source documents' claims reproduced in miniature, with intervals."""
