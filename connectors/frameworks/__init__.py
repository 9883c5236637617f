"""Rerank with the sidecar inside LangChain, LlamaIndex and Haystack, images included.

One adapter per framework, each over the sidecar's gRPC client (`sidecar.client`):

* `connectors.frameworks.langchain.SidecarRerank`: a LangChain `BaseDocumentCompressor`
  (`pip install 'rerank-sidecar[langchain]'`);
* `connectors.frameworks.llamaindex.SidecarRerank`: a LlamaIndex `BaseNodePostprocessor`
  (`pip install 'rerank-sidecar[llamaindex]'`);
* `connectors.frameworks.haystack.SidecarRanker`: a Haystack `@component` ranker
  (`pip install 'rerank-sidecar[haystack]'`).

Each scores a document's text together with the images named in its metadata under `image_key`
(default `"image"`: one reference or a list), keeps the framework's documents and metadata, puts
the score where the framework expects it and returns the best `top_n` (`top_k` in Haystack).
Importing this package imports no framework; each module imports only its own.
"""
