"""Text in: documents from the Hub, local files or the synthetic language (``sources``, ``synthetic``), the paper's
selection of sequences (``selection``), tokenisation with BOS first (``tokenization``), the function words CSPA
never keeps (``function_words``) and GPT-2's tokenizer files (``gpt2_tokenizer/``)."""
