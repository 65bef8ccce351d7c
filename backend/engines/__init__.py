"""The segmentation engines (SAM, GrabCut) as request threads use them, and the start-up check of their settings."""
