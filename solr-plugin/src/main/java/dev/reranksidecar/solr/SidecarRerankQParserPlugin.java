package dev.reranksidecar.solr;

import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.apache.lucene.search.Query;
import org.apache.solr.common.SolrException;
import org.apache.solr.common.params.CommonParams;
import org.apache.solr.common.params.SolrParams;
import org.apache.solr.common.util.NamedList;
import org.apache.solr.common.util.StrUtils;
import org.apache.solr.request.SolrQueryRequest;
import org.apache.solr.search.AbstractReRankQuery;
import org.apache.solr.search.QParser;
import org.apache.solr.search.QParserPlugin;
import org.apache.solr.search.RankQuery;
import org.apache.solr.search.SyntaxError;

/**
 * A rerank query ({@code rq}) that rescores the top documents with the multimodal rerank sidecar.
 *
 * <p>Register it once per collection (Config API or solrconfig.xml) with the sidecar's HTTP URL:
 *
 * <pre>
 * {"add-queryparser": {"name": "sidecar", "class": "dev.reranksidecar.solr.SidecarRerankQParserPlugin",
 *                      "url": "http://127.0.0.1:8080"}}
 * </pre>
 *
 * then search with {@code rq={!sidecar reRankDocs=50 textField=text imageField=image}}. Local
 * parameters: {@code reRankDocs} (default 100), {@code query} (default: the request's {@code q}),
 * {@code textField} and {@code imageField} (comma-separated stored fields; defaults from the
 * plugin's configuration, else "text" and none), {@code onError} ("fail", the default, fails the
 * search with "sidecar rerank failed: ..." (Solr's rerank collector answers HTTP 400); "keep" keeps
 * the first-pass order). Configuration: {@code url} (required),
 * {@code apiKey}, {@code timeoutMs} (default 30000), {@code textField}, {@code imageField}.
 */
public class SidecarRerankQParserPlugin extends QParserPlugin {
  public static final String NAME = "sidecar";
  private SidecarClient client;
  private String textField = "text";
  private String imageField = "";

  @Override
  public void init(NamedList<?> args) {
    Object url = args.get("url");
    if (url == null || url.toString().isBlank()) {
      throw new SolrException(SolrException.ErrorCode.SERVER_ERROR, "the sidecar query parser needs a 'url'");
    }
    Object apiKey = args.get("apiKey");
    Object timeout = args.get("timeoutMs");
    long millis = timeout == null ? 30_000L : Long.parseLong(timeout.toString());
    client = new SidecarClient(url.toString(), apiKey == null ? null : apiKey.toString(), Duration.ofMillis(millis));
    if (args.get("textField") != null) {
      textField = args.get("textField").toString();
    }
    if (args.get("imageField") != null) {
      imageField = args.get("imageField").toString();
    }
  }

  @Override
  public QParser createParser(String qstr, SolrParams localParams, SolrParams params, SolrQueryRequest req) {
    return new QParser(qstr, localParams, params, req) {
      @Override
      public Query parse() throws SyntaxError {
        int reRankDocs = localParams.getInt("reRankDocs", 100);
        if (reRankDocs < 1) {
          throw new SyntaxError("reRankDocs must be at least 1; got " + reRankDocs);
        }
        String query = localParams.get("query", params.get(CommonParams.Q));
        if (query == null || query.isBlank()) {
          throw new SyntaxError("the sidecar rerank needs query text: a 'query' local parameter or q");
        }
        String onError = localParams.get("onError", "fail");
        if (!onError.equals("fail") && !onError.equals("keep")) {
          throw new SyntaxError("onError must be 'fail' or 'keep'; got " + onError);
        }
        List<String> texts = fields(localParams.get("textField", textField));
        List<String> images = fields(localParams.get("imageField", imageField));
        SidecarRescorer rescorer = new SidecarRescorer(client, query, texts, images, onError.equals("keep"));
        return new SidecarRerankQuery(null, reRankDocs, rescorer, List.of(query, texts, images, onError));
      }
    };
  }

  private static List<String> fields(String spec) {
    List<String> names = new ArrayList<>();
    for (String name : StrUtils.splitSmart(spec, ',')) {
      if (!name.isBlank()) {
        names.add(name.trim());
      }
    }
    return names;
  }

  /** The rank query: Solr's rerank collector over the main query, rescored by the sidecar. */
  static final class SidecarRerankQuery extends AbstractReRankQuery {
    private final SidecarRescorer rescorer;
    private final List<Object> key; // what makes two such queries equal (query cache)

    SidecarRerankQuery(Query mainQuery, int reRankDocs, SidecarRescorer rescorer, List<Object> key) {
      super(mainQuery, reRankDocs, new FailureAsSolrError(rescorer));
      this.rescorer = rescorer;
      this.key = key;
    }

    @Override
    public RankQuery wrap(Query mainQuery) {
      return new SidecarRerankQuery(mainQuery, reRankDocs, rescorer, key);
    }

    @Override
    protected Query rewrite(Query rewrittenMainQuery) throws IOException {
      return new SidecarRerankQuery(rewrittenMainQuery, reRankDocs, rescorer, key);
    }

    @Override
    public boolean equals(Object other) {
      return sameClassAs(other)
          && Objects.equals(mainQuery, ((SidecarRerankQuery) other).mainQuery)
          && reRankDocs == ((SidecarRerankQuery) other).reRankDocs
          && key.equals(((SidecarRerankQuery) other).key);
    }

    @Override
    public int hashCode() {
      return Objects.hash(classHash(), mainQuery, reRankDocs, key);
    }

    @Override
    public String toString(String field) {
      return "{!" + NAME + " reRankDocs=" + reRankDocs + " query=" + key.get(0) + "}" + mainQuery;
    }
  }

  /** A sidecar failure becomes a SolrException naming the sidecar and the reason. */
  static final class FailureAsSolrError extends org.apache.lucene.search.Rescorer {
    private final SidecarRescorer inner;

    FailureAsSolrError(SidecarRescorer inner) {
      this.inner = inner;
    }

    @Override
    public org.apache.lucene.search.TopDocs rescore(
        org.apache.lucene.search.IndexSearcher searcher, org.apache.lucene.search.TopDocs firstPass, int topN) {
      try {
        return inner.rescore(searcher, firstPass, topN);
      } catch (IOException e) {
        throw new SolrException(SolrException.ErrorCode.SERVICE_UNAVAILABLE, "sidecar rerank failed: " + e.getMessage(), e);
      }
    }

    @Override
    public org.apache.lucene.search.Explanation explain(
        org.apache.lucene.search.IndexSearcher searcher, org.apache.lucene.search.Explanation firstPass, int docId)
        throws IOException {
      return inner.explain(searcher, firstPass, docId);
    }
  }
}
