"""The MuJoCo domain: SAC policy, reward networks, datasets and the AIHF LightningModule."""
