"""The GPT proxy, its loss, and its parameter/FLOP accounting."""
