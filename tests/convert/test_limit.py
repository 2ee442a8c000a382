

def test_limit_reads_only_the_first_rows(tmp_path, shared_data):
    from dataprep.convert import convert

    m = convert(str(shared_data / "alpaca_en_demo.json"), str(tmp_path / "o"), template="alpaca", limit=25,
                batch_rows=10)
    assert m.counts.n_in == 25 and m.counts.n_out + m.counts.rejected == 25
    assert m.config["limit"] == 25 and m.inputs[0]["path"].endswith("alpaca_en_demo.json")
