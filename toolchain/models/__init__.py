"""Model adapters over BERT-family encoders and GPT-2/Llama-family decoders."""
