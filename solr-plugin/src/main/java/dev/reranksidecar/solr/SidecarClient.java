package dev.reranksidecar.solr;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.solr.common.util.Utils;

/** Scores (query, document) pairs with the sidecar's Cohere-compatible {@code POST /v2/rerank}. */
final class SidecarClient {
  private final URI endpoint;
  private final String apiKey;
  private final Duration timeout;
  private final HttpClient http;

  SidecarClient(String baseUrl, String apiKey, Duration timeout) {
    this.endpoint = URI.create(baseUrl.replaceAll("/+$", "") + "/v2/rerank");
    this.apiKey = apiKey;
    this.timeout = timeout;
    this.http = HttpClient.newBuilder().connectTimeout(timeout).build();
  }

  URI endpoint() {
    return endpoint;
  }

  /**
   * One relevance score in [0, 1] per document, in the documents' order.
   *
   * @param documents plain text, or a JSON media string {"text": ..., "images": [...]}
   * @throws IOException the sidecar could not be reached or refused the request
   */
  float[] scores(String query, List<String> documents) throws IOException {
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("query", query);
    body.put("documents", documents);
    HttpRequest.Builder request =
        HttpRequest.newBuilder(endpoint)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(Utils.toJSONString(body)));
    if (apiKey != null && !apiKey.isEmpty()) {
      request.header("Authorization", "Bearer " + apiKey);
    }
    HttpResponse<String> response;
    try {
      response = http.send(request.build(), HttpResponse.BodyHandlers.ofString());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while waiting for the sidecar at " + endpoint, e);
    } catch (IOException e) {
      String reason = e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
      throw new IOException("cannot reach the sidecar at " + endpoint + " (" + reason + ")", e);
    }
    if (response.statusCode() != 200) {
      throw new IOException(
          "the sidecar at " + endpoint + " answered HTTP " + response.statusCode() + ": " + response.body());
    }
    return parse(response.body(), documents.size());
  }

  @SuppressWarnings("unchecked")
  private float[] parse(String json, int count) throws IOException {
    float[] scores = new float[count];
    boolean[] seen = new boolean[count];
    Object results = ((Map<String, Object>) Utils.fromJSONString(json)).get("results");
    if (!(results instanceof List)) {
      throw new IOException("the sidecar at " + endpoint + " answered without results: " + json);
    }
    for (Object item : (List<Object>) results) {
      Map<String, Object> result = (Map<String, Object>) item;
      int index = ((Number) result.get("index")).intValue();
      scores[index] = ((Number) result.get("relevance_score")).floatValue();
      seen[index] = true;
    }
    for (int i = 0; i < count; i++) {
      if (!seen[i]) {
        throw new IOException("the sidecar at " + endpoint + " returned no score for document " + i);
      }
    }
    return scores;
  }
}
