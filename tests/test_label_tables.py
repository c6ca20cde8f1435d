"""Label tables that would have answered silently wrong: each is read right or refused naming the row."""

import gzip

import numpy as np
import pytest

from xrayest import load_label_table


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_a_row_with_more_or_fewer_fields_than_the_header_is_refused(tmp_path):
    table = write(tmp_path / "t.csv", "path,label,patient\na.png,normal,1\nb.png,covid,2,extra\n")
    with pytest.raises(ValueError, match="row 3 has 4 fields but the header has 3"):
        load_label_table(table, "path", label_column="label", check_files=False)
    table = write(tmp_path / "t.csv", "path,label,patient\na.png,normal,1\nb.png,covid\n")
    with pytest.raises(ValueError, match="row 3 has 2 fields but the header has 3"):
        load_label_table(table, "path", label_column="label", check_files=False)


def test_one_image_listed_twice_with_different_labels_is_refused(tmp_path):
    table = write(tmp_path / "t.csv", "path,label\na.png,normal\nb.png,covid\na.png,covid\n")
    with pytest.raises(ValueError, match=r"rows 2 and 4 both list .*a.png with different labels"):
        load_label_table(table, "path", label_column="label", check_files=False)
    same = write(tmp_path / "s.csv", "path,label\na.png,normal\nb.png,covid\na.png,normal\n")
    assert len(load_label_table(same, "path", label_column="label", check_files=False).paths) == 3


def test_a_blank_findings_cell_is_not_no_finding(tmp_path):
    table = write(tmp_path / "t.csv", "path,findings\na.png,Effusion\nb.png,\nc.png,No Finding\n")
    with pytest.raises(ValueError, match="row 3: column 'findings' is blank; write 'No Finding'"):
        load_label_table(table, "path", label_column="findings", sep="|", none_label="No Finding", check_files=False)


def test_relative_paths_stay_inside_the_root(tmp_path):
    (tmp_path / "data").mkdir()
    table = write(tmp_path / "data" / "t.csv", "path,label\na.png,normal\n../secret.png,covid\n")
    with pytest.raises(ValueError, match="row 3: path '../secret.png' leads outside the table's root"):
        load_label_table(table, "path", label_column="label", check_files=False)
    inside = write(tmp_path / "data" / "u.csv", "path,label\nsub/../a.png,normal\n/abs/b.png,covid\n")
    t = load_label_table(inside, "path", label_column="label", check_files=False)
    assert t.paths[1] == "/abs/b.png"  # an absolute path is the user's explicit choice


def test_excel_cp1252_and_gzip_tables_read(tmp_path):
    text = "path,label,site\na.png,normal,Hôpital Café\nb.png,covid,Zürich\n"
    excel = write(tmp_path / "excel.csv", text, encoding="cp1252")
    t = load_label_table(excel, "path", label_column="label", check_files=False)
    assert t.y.tolist() == ["normal", "covid"]
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    t = load_label_table(packed, "path", label_column="label", check_files=False)
    assert t.y.tolist() == ["normal", "covid"] and np.all([p.startswith(str(tmp_path)) for p in t.paths])
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="broken.csv.gz cannot be read"):
        load_label_table(broken, "path", label_column="label", check_files=False)


def test_a_dataframe_read_by_pandas_gives_what_the_file_gives(tmp_path):
    pd = pytest.importorskip("pandas")
    text = "Path,Edema,Cardiomegaly,Patient\np1/a.jpg,1.0,,7\np1/b.jpg,-1.0,0.0,7\np2/c.jpg,,1.0,9\n"
    csv_path = write(tmp_path / "t.csv", text)
    from_file = load_label_table(csv_path, "Path", label_columns=["Edema", "Cardiomegaly"], uncertain="ignore",
                                 patient_column="Patient", check_files=False)
    frame = pd.read_csv(csv_path)  # floats with NaN for blank, ints for the patient column
    from_frame = load_label_table(frame, "Path", label_columns=["Edema", "Cardiomegaly"], uncertain="ignore",
                                  patient_column="Patient", root=tmp_path, check_files=False)
    assert from_file.y.tolist() == from_frame.y.tolist() == [[1, 0], [-1, 0], [0, 1]]
    assert from_file.paths.tolist() == from_frame.paths.tolist()
    assert from_file.groups.tolist() == from_frame.groups.tolist() == ["7", "7", "9"]
    out = from_file.to_frame()
    assert out.columns.tolist() == ["path", "Edema", "Cardiomegaly", "patient"] and out["Edema"].tolist() == [1, -1, 0]


@pytest.mark.parametrize("suffix", [".bz2", ".xz", ".zip"])
def test_compressed_tables_read(tmp_path, suffix):
    import bz2
    import lzma
    import zipfile

    text = "path,label\na.png,normal\nb.png,covid\n"
    path = tmp_path / f"t.csv{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("t.csv", text)
    else:
        path.write_bytes((bz2 if suffix == ".bz2" else lzma).compress(text.encode()))
    assert load_label_table(path, "path", label_column="label", check_files=False).y.tolist() == ["normal", "covid"]


def test_the_cli_reads_a_gzipped_table(tmp_path, capsys):
    from PIL import Image

    from xrayest.cli import main

    rows = []
    for i in range(8):
        name = f"img{i}.png"
        Image.fromarray(np.full((16, 16), 40 * (i % 2) + i, np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{'normal' if i % 2 else 'covid'},p{i // 2}")
    (tmp_path / "labels.csv.gz").write_bytes(gzip.compress(("path,label,Patient ID\n" + "\n".join(rows)).encode()))
    model = tmp_path / "m.keras"
    assert main(["fit", "--labels", str(tmp_path / "labels.csv.gz"), "--path-column", "path", "--label-column",
                 "label", "--backbone", "small_cnn", "--weights", "none", "--image-size", "16", "--epochs", "1",
                 "-q", "--out", str(model)]) == 0, capsys.readouterr().err
    assert model.is_file()
