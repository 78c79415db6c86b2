"""Text in: documents from the Hub, local files or the synthetic language (``sources``, ``synthetic``), and
tokenisation with BOS first (``tokenization``), and the function words CSPA never keeps (``function_words``)."""
