"""MASR metadata encoders: lang2vec language vectors, language coordinates, Haversine."""
