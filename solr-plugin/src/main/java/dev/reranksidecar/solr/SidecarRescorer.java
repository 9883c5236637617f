package dev.reranksidecar.solr;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.lucene.document.Document;
import org.apache.lucene.index.StoredFields;
import org.apache.lucene.search.Explanation;
import org.apache.lucene.search.IndexSearcher;
import org.apache.lucene.search.Rescorer;
import org.apache.lucene.search.ScoreDoc;
import org.apache.lucene.search.TopDocs;
import org.apache.solr.common.util.Utils;

/**
 * Replaces the first-pass scores of the top documents by the sidecar's relevance scores.
 *
 * <p>Each document goes to the sidecar as its text fields joined by newlines, or, when it has
 * image references, as the JSON media string {"text": ..., "images": [...]}, which the sidecar
 * scores as text plus images.
 */
final class SidecarRescorer extends Rescorer {
  private final SidecarClient client;
  private final String query;
  private final List<String> textFields;
  private final List<String> imageFields;
  private final boolean keepOnError;

  SidecarRescorer(
      SidecarClient client, String query, List<String> textFields, List<String> imageFields, boolean keepOnError) {
    this.client = client;
    this.query = query;
    this.textFields = textFields;
    this.imageFields = imageFields;
    this.keepOnError = keepOnError;
  }

  @Override
  public TopDocs rescore(IndexSearcher searcher, TopDocs firstPass, int topN) throws IOException {
    ScoreDoc[] hits = firstPass.scoreDocs.clone();
    if (hits.length == 0) {
      return firstPass;
    }
    StoredFields stored = searcher.storedFields();
    List<String> documents = new ArrayList<>(hits.length);
    for (ScoreDoc hit : hits) {
      documents.add(documentOf(stored, hit.doc));
    }
    float[] scores;
    try {
      scores = client.scores(query, documents);
    } catch (IOException e) {
      if (keepOnError) {
        return new TopDocs(firstPass.totalHits, Arrays.copyOf(hits, Math.min(topN, hits.length)));
      }
      throw e;
    }
    for (int i = 0; i < hits.length; i++) {
      hits[i].score = scores[i];
    }
    // Stable: equal scores keep their first-pass order.
    Arrays.sort(hits, Comparator.comparingDouble((ScoreDoc h) -> h.score).reversed());
    return new TopDocs(firstPass.totalHits, Arrays.copyOf(hits, Math.min(topN, hits.length)));
  }

  @Override
  public Explanation explain(IndexSearcher searcher, Explanation firstPass, int docId) throws IOException {
    // A cross-encoder scores each pair on its own, so one document's score needs only itself.
    float score = client.scores(query, List.of(documentOf(searcher.storedFields(), docId)))[0];
    return Explanation.match(score, "sidecar relevance score from " + client.endpoint(), firstPass);
  }

  String documentOf(StoredFields stored, int docId) throws IOException {
    Set<String> wanted = new java.util.HashSet<>(textFields);
    wanted.addAll(imageFields);
    Document document = stored.document(docId, wanted);
    List<String> texts = new ArrayList<>();
    for (String field : textFields) {
      for (String value : document.getValues(field)) {
        if (!value.isEmpty()) {
          texts.add(value);
        }
      }
    }
    List<String> images = new ArrayList<>();
    for (String field : imageFields) {
      for (String value : document.getValues(field)) {
        if (!value.isEmpty()) {
          images.add(value);
        }
      }
    }
    String text = String.join("\n", texts);
    if (images.isEmpty()) {
      return text;
    }
    Map<String, Object> media = new LinkedHashMap<>();
    media.put("text", text);
    media.put("images", images);
    return Utils.toJSONString(media);
  }
}
