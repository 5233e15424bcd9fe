"""The language-model domain: a LightningModule composing a Hugging Face policy, a frozen reference, an explicit
or implicit reward and a data mix of demonstrations, preference pairs and fresh policy samples."""
