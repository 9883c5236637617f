/*
 * Test-only Elasticsearch module for tests/engines/elasticsearch.sh.
 *
 * The Maven Central integ-test-zip distribution of Elasticsearch 9 lacks the module
 * that answers "GET /" and "HEAD /", so elasticsearch-py's info() fails with 405 and
 * ping() returns False. This module answers both with the node's name, cluster name,
 * cluster UUID and build facts, which is what clients read from that endpoint.
 * It is compiled against the distribution's own lib/ jars at install time.
 */
package rerank.sidecar.testsupport;

import java.util.Collection;
import java.util.List;
import java.util.function.Predicate;
import java.util.function.Supplier;

import org.elasticsearch.Build;
import org.elasticsearch.action.admin.cluster.state.ClusterStateResponse;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.ClusterName;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.core.TimeValue;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.rest.action.RestBuilderListener;
import org.elasticsearch.xcontent.XContentBuilder;

public class RootInfoPlugin extends Plugin implements ActionPlugin {

    @Override
    public Collection<RestHandler> getRestHandlers(
        RestHandlersServices services,
        Supplier<DiscoveryNodes> nodesInCluster,
        Predicate<NodeFeature> clusterSupportsFeature
    ) {
        return List.of(new RootHandler(services.settings()));
    }

    static final class RootHandler extends BaseRestHandler {
        private final String nodeName;

        RootHandler(Settings settings) {
            this.nodeName = Node.NODE_NAME_SETTING.get(settings);
        }

        @Override
        public String getName() {
            return "rerank_test_root_info";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            boolean headOnly = request.method() == RestRequest.Method.HEAD;
            return channel -> client.admin()
                .cluster()
                .prepareState(TimeValue.timeValueSeconds(30))
                .clear()
                .setMetadata(true)
                .execute(new RestBuilderListener<ClusterStateResponse>(channel) {
                    @Override
                    public RestResponse buildResponse(ClusterStateResponse state, XContentBuilder body) throws Exception {
                        if (headOnly) {
                            return new RestResponse(RestStatus.OK, RestResponse.TEXT_CONTENT_TYPE, "");
                        }
                        Build build = Build.current();
                        ClusterName clusterName = state.getClusterName();
                        body.startObject();
                        body.field("name", nodeName);
                        body.field("cluster_name", clusterName.value());
                        body.field("cluster_uuid", state.getState().metadata().clusterUUID());
                        body.startObject("version");
                        body.field("number", build.qualifiedVersion());
                        body.field("build_flavor", build.flavor());
                        body.field("build_type", build.type().displayName());
                        body.field("build_hash", build.hash());
                        body.field("build_date", build.date());
                        body.field("build_snapshot", build.isSnapshot());
                        body.field("lucene_version", org.apache.lucene.util.Version.LATEST.toString());
                        body.field("minimum_wire_compatibility_version", build.minWireCompatVersion());
                        body.field("minimum_index_compatibility_version", build.minIndexCompatVersion());
                        body.endObject();
                        body.field("tagline", "You Know, for Search");
                        body.endObject();
                        return new RestResponse(RestStatus.OK, body);
                    }
                });
        }
    }
}
